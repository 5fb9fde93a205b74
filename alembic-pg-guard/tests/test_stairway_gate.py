"""The stairway gate in a project of its own: every revision up, down and up again on a
throwaway database of the test server; a broken downgrade is one line naming its file."""

from pathlib import Path

import pytest
from guard_helpers import CREATE_GADGET, Project, clean_env, make_project
from sqlalchemy import URL

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

HEADER = '''"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None

'''


def add_column(column: str, dropped: str) -> str:
    """A revision adding `column`, whose downgrade drops `dropped` (a typo breaks it)."""
    return f"""def upgrade():
    op.add_column("gadget", sa.Column("{column}", sa.Text()))


def downgrade():
    op.drop_column("gadget", "{dropped}")
"""


MERGE = "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"


@pytest.fixture
def project(tmp_path: Path, database: URL, pg_server: URL) -> Project:
    scratch = pg_server.render_as_string(hide_password=False)
    return make_project(
        tmp_path / "gadgets", database, clean_env(ALEMBIC_PG_GUARD_SCRATCH_URL=scratch)
    )


def write(project: Project, revision: str, down, body: str, doc: str = "") -> Path:
    path = project.versions / f"{revision}_{doc.replace(' ', '_') or 'x'}.py"
    path.write_text(HEADER.format(doc=doc, revision=revision, down=down) + body)
    return path


def test_a_broken_downgrade_fails_the_stairway_in_one_line_naming_it(project: Project):
    write(project, "aaaa00000001", None, CREATE_GADGET, "create gadget")
    broken = write(project, "bbbb00000002", "aaaa00000001", add_column("colour", "color"))

    proc = project.guard("check", "stairway")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()  # Alembic's own INFO lines are kept out too
    assert line == (
        f"error: stairway: alembic/versions/{broken.name}:16: bbbb00000002 downgrade fails: "
        'UndefinedColumn: column "color" of relation "gadget" does not exist'
    )
    assert "stairway: ok" not in proc.stdout


def test_a_good_history_with_a_merge_passes_the_stairway(project: Project):
    write(project, "aaaa00000001", None, CREATE_GADGET, "create gadget")
    write(project, "bbbb00000002", "aaaa00000001", add_column("colour", "colour"))
    write(project, "cccc00000003", "aaaa00000001", add_column("size", "size"))
    write(project, "dddd00000004", ("bbbb00000002", "cccc00000003"), MERGE, "merge")

    proc = project.guard("check", "stairway")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == (
        "stairway: ok (4 revisions up, down, up; 1 merge(s) with each branch applied first)\n"
    )
    assert proc.stderr == ""

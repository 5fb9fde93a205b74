"""A revision importing the app's models (_model_imports): the squawk gate names the import,
the cause (the models are the current code, not the schema at that revision) and the fix."""

from pathlib import Path

import pytest
from guard_helpers import clean_env, make_project
from sqlalchemy import URL

FIRST = '''"""gadget, without its name yet"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


def upgrade():
    op.create_table("gadget", sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True))


def downgrade():
    op.drop_table("gadget")
'''
# A data revision written against the models as they are today (they have `name`).
WITH_MODELS = '''"""name the gadgets"""

import sqlalchemy as sa
from alembic import op

from models import Gadget

revision = "bbbb00000002"
down_revision = "aaaa00000001"


def upgrade():
    op.execute(sa.update(Gadget).values(name="unnamed"))


def downgrade():
    pass
'''


@pytest.mark.slow  # runs the gate in a subprocess on a scratch database
def test_the_squawk_gate_names_a_revision_that_imports_the_models(
    tmp_path: Path, database: URL, pg_server: URL
):
    scratch = pg_server.render_as_string(hide_password=False)
    project = make_project(
        tmp_path / "p", database, clean_env(ALEMBIC_PG_GUARD_SCRATCH_URL=scratch)
    )
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    (project.versions / "bbbb00000002_name.py").write_text(WITH_MODELS)
    proc = project.guard("check", "squawk")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    problems = [  # a single problem is the `error:` line itself
        line.removeprefix("error: ")
        for line in proc.stderr.splitlines()
        if "imports the app's models" in line
    ]
    assert problems == [
        "squawk: alembic/versions/bbbb00000002_name.py:6: bbbb00000002 imports the app's models "
        "(models): the models are the current code, not the schema at this "
        "revision; describe only what it touches with lightweight tables: sa.table('<table>', "
        "sa.column('<name>', sa.String), ...), as they are at this revision"
    ], proc.stderr


@pytest.mark.slow  # runs the runner in a subprocess
def test_the_runner_names_the_models_import_when_such_a_revision_fails(
    tmp_path: Path, database: URL
):
    project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    (project.versions / "bbbb00000002_name.py").write_text(WITH_MODELS)
    proc = project.guard("migrate")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: revision bbbb00000002 (name the gadgets) failed, and nothing of it is recorded "
        'as applied: UndefinedColumn: column "name" of relation "gadget" does not exist'
    ), proc.stderr
    assert error.endswith(
        "; it imports the app's models (models, line 6): the models are the current code, not "
        "the schema at this revision; describe only what it touches with lightweight tables: "
        "sa.table('<table>', sa.column('<name>', sa.String), ...), as they are at this revision"
    ), error

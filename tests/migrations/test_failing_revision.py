"""A revision that fails half-way, in a scratch copy of the history: rolled back whole."""

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from src.config import Settings
from tests.helpers import (
    ScratchProject,
    alembic_failure,
    config_for,
    current_version,
    fresh_database,
    row_counts,
    schema_diff,
    schema_snapshot,
    script_directory,
    write_revision,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

FAILURES = {
    "raises": 'raise RuntimeError("deliberate failure after some DDL")',
    "bad-sql": 'op.execute("SELECT no_such_function()")',
}


def failing_revision(versions: Path, head: str, table: str, failure: str) -> Path:
    return write_revision(
        versions,
        "f00dfa11babe",
        head,
        "def upgrade() -> None:\n"
        f'    op.add_column("{table}", sa.Column("doomed", sa.Text()))\n'
        '    op.create_table("doomed", sa.Column("id", sa.BigInteger(), primary_key=True))\n'
        '    op.create_index("doomed_id_idx", "doomed", ["id"])\n'
        '    op.execute("INSERT INTO doomed (id) VALUES (1)")\n'
        f"    op.execute(\"UPDATE {table} SET doomed = 'x'\")\n"
        f"    {failure}\n\n\n"
        "def downgrade() -> None:\n"
        '    op.drop_table("doomed")\n'
        f'    op.drop_column("{table}", "doomed")\n',
    )


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_failing_revision_leaves_schema_and_version_as_before(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path, failure: str
):
    """A revision that fails half-way is rolled back whole: schema, data and
    alembic_version are as before. From empty, the revisions before it stay applied."""
    script = script_directory()
    (head,) = script.get_heads()
    with fresh_database(sync_engine) as at_head_url, fresh_database(sync_engine) as empty_url:
        at_head = create_engine(at_head_url, poolclass=NullPool)
        empty = create_engine(empty_url, poolclass=NullPool)
        at_head_settings = settings.for_database(at_head_url)
        empty_settings = settings.for_database(empty_url)
        try:
            command.upgrade(config_for(at_head_settings, at_head), "head")
            good_schema, good_rows = schema_snapshot(at_head), row_counts(at_head)
            table = sorted(good_rows)[0]
            failing_revision(scratch_alembic / "versions", head, table, failure)

            with pytest.raises((RuntimeError, DBAPIError), match=r"deliberate|no_such_function"):
                command.upgrade(config_for(at_head_settings, at_head, scratch_alembic), "head")
            assert current_version(at_head) == {head}
            assert not schema_diff(good_schema, schema_snapshot(at_head))
            assert row_counts(at_head) == good_rows

            with pytest.raises((RuntimeError, DBAPIError), match=r"deliberate|no_such_function"):
                command.upgrade(config_for(empty_settings, empty, scratch_alembic), "head")
            assert current_version(empty) == {head}  # one transaction per migration
            assert not schema_diff(good_schema, schema_snapshot(empty))
            assert row_counts(empty) == good_rows
        finally:
            at_head.dispose()
            empty.dispose()


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_alembic_upgrade_names_the_failing_revision_in_one_line(
    sync_engine: Engine, tmp_path: Path, failure: str
):
    """`alembic upgrade head` (pipenv run alembic-latest) says what `migrate` says: one
    `error:` line naming the revision, exit 1, no traceback."""
    (head,) = script_directory().get_heads()
    with fresh_database(sync_engine) as url:
        project = ScratchProject(tmp_path / "project", url)
        assert project.alembic("upgrade", "head").returncode == 0
        failing_revision(project.versions, head, "country", failure)

        proc = project.alembic("upgrade", "head")
        line = alembic_failure(proc)
        assert proc.returncode == 1, proc.stderr
        assert line.startswith("error: revision f00dfa11babe "), line
        assert "failed, and nothing of it is recorded as applied: " in line, line
        assert "deliberate failure" in line or "no_such_function" in line, line
        assert "Traceback" not in proc.stdout + proc.stderr
        assert project.query("SELECT version_num FROM alembic_version") == [(head,)]


def test_a_failing_cast_keeps_postgresql_hint(sync_engine: Engine, tmp_path: Path):
    """A type change PostgreSQL cannot cast implicitly: `migrate` names the error class and
    keeps PostgreSQL's HINT (the USING to write), still in one line."""
    (head,) = script_directory().get_heads()
    with fresh_database(sync_engine) as url:
        project = ScratchProject(tmp_path / "project", url)
        assert project.alembic("upgrade", "head").returncode == 0
        write_revision(
            project.versions,
            "ca57ca57ca57",
            head,
            "def upgrade() -> None:\n"
            '    op.alter_column("country", "name", type_=sa.Integer())\n\n\n'
            "def downgrade() -> None:\n    pass\n",
        )
        line = alembic_failure(project.run("-m", "alembic_pg_guard", "migrate"))
        assert line.startswith("error: revision ca57ca57ca57 "), line
        assert line.endswith(
            'DatatypeMismatch: column "name" cannot be cast automatically to type integer; '
            'HINT: You might need to specify "USING name::integer".'
        ), line

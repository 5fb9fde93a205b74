"""The revision history itself, run for real against PostgreSQL; offline SQL without
one; the alembic command line without a database, on two heads, behind head."""

from pathlib import Path

import pytest
from alembic import command
from alembic_pg_guard import code_history, db_heads
from sqlalchemy import Engine, inspect

from src.config import PROJECT_ROOT, Settings
from src.migrations import alembic_config
from tests.helpers import (
    ScratchProject,
    alembic_failure,
    child_env,
    fresh_database,
    one_line_failure,
    run_python,
    script_directory,
    unreachable_url,
    write_revision,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def columns(engine: Engine, table: str) -> set[str]:
    insp = inspect(engine)
    return {c["name"] for c in insp.get_columns(table)} if insp.has_table(table) else set()


def test_upgrade_downgrade_base_upgrade(settings: Settings, migrated: Engine):
    cfg = alembic_config(settings)
    heads = set(code_history(cfg).heads)
    assert "alpha3" in columns(migrated, "country")
    try:
        command.downgrade(cfg, "base")
        assert not inspect(migrated).has_table("country")
        with migrated.connect() as conn:
            assert db_heads(conn) == set()
    finally:
        command.upgrade(cfg, "head")
    assert {"id", "alpha2", "alpha3", "name"} <= columns(migrated, "country")
    with migrated.connect() as conn:
        assert db_heads(conn) == heads


def test_offline_sql_needs_no_database():
    proc = run_python(
        "-m",
        "alembic",
        "upgrade",
        "head",
        "--sql",
        cwd=PROJECT_ROOT,
        env=child_env(unreachable_url()),
    )
    assert proc.returncode == 0, proc.stderr
    assert "CREATE TABLE country" in proc.stdout
    assert "ALTER TABLE country ADD COLUMN alpha3" in proc.stdout
    assert "alembic_version" in proc.stdout


def test_alembic_cli_without_database_is_one_line():
    proc = run_python(
        "-m", "alembic", "upgrade", "head", cwd=PROJECT_ROOT, env=child_env(unreachable_url())
    )
    output = proc.stdout + proc.stderr
    assert one_line_failure(proc).startswith("error: cannot reach the database"), output
    assert proc.returncode == 1  # not alembic's 255, nor its second "FAILED:" line
    assert "FAILED" not in output and "Traceback" not in output


def test_two_heads_say_how_to_join_them_in_one_line(sync_engine: Engine, tmp_path: Path):
    """Two branches each added a revision: `migrate` and `alembic upgrade head` say to
    merge the heads (not alembic's '<branchname>@head'), once, exit 1; nothing runs."""
    (head,) = script_directory().get_heads()
    with fresh_database(sync_engine) as url:
        project = ScratchProject(tmp_path / "project", url)
        assert project.alembic("upgrade", "head").returncode == 0
        body = "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
        for rev in ("aaaa00000001", "bbbb00000002"):
            write_revision(project.versions, rev, head, body)
        for args in (("-m", "alembic_pg_guard", "migrate"), ("-m", "alembic", "upgrade", "head")):
            proc = project.run(*args)
            output = proc.stdout + proc.stderr
            assert alembic_failure(proc) == (
                "error: the history has 2 heads (aaaa00000001, bbbb00000002): two branches "
                "each added a revision; join them with `pipenv run alembic merge heads -m "
                "'merge heads'` and commit the new file (or rebase one: set its down_revision "
                "to the other's revision)"
            ), output
            assert proc.returncode == 1 and "FAILED" not in output, output
        assert project.query("SELECT version_num FROM alembic_version") == [(head,)]


def test_autogenerate_behind_head_is_one_line(sync_engine: Engine, tmp_path: Path):
    """`alembic-revision` on a database behind head: alembic's own message, once, exit 1."""
    with fresh_database(sync_engine) as url:
        project = ScratchProject(tmp_path / "project", url)
        proc = project.alembic("revision", "--autogenerate", "-m", "too early")
        assert alembic_failure(proc) == "error: Target database is not up to date."
        assert proc.returncode == 1 and "FAILED" not in proc.stdout + proc.stderr

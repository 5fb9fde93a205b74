"""The revision history itself, run for real against PostgreSQL; offline SQL without
one; the alembic command line without a database."""

from alembic import command
from sqlalchemy import Engine, inspect

from src.config import PROJECT_ROOT, Settings
from src.migrate import alembic_config, current_revisions, head_revisions
from tests.helpers import child_env, one_line_failure, run_python, unreachable_url


def columns(engine: Engine, table: str) -> set[str]:
    insp = inspect(engine)
    return {c["name"] for c in insp.get_columns(table)} if insp.has_table(table) else set()


def test_upgrade_downgrade_base_upgrade(settings: Settings, migrated: Engine):
    cfg = alembic_config(settings)
    heads = head_revisions(cfg)
    assert "alpha3" in columns(migrated, "country")
    try:
        command.downgrade(cfg, "base")
        assert not inspect(migrated).has_table("country")
        with migrated.connect() as conn:
            assert current_revisions(conn) == set()
    finally:
        command.upgrade(cfg, "head")
    assert {"id", "alpha2", "alpha3", "name"} <= columns(migrated, "country")
    with migrated.connect() as conn:
        assert current_revisions(conn) == heads


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

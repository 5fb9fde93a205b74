"""The revision history itself, run for real against PostgreSQL."""

import os
import subprocess
import sys

from alembic import command
from sqlalchemy import Engine, inspect

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT
from src.migrate import alembic_config, current_revisions, head_revisions


def columns(engine: Engine, table: str) -> set[str]:
    insp = inspect(engine)
    return {c["name"] for c in insp.get_columns(table)} if insp.has_table(table) else set()


def test_upgrade_downgrade_base_upgrade(migrated: Engine):
    cfg = alembic_config()
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
    closed = free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://nobody:x@127.0.0.1:{closed}/none"}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CREATE TABLE country" in proc.stdout
    assert "ALTER TABLE country ADD COLUMN alpha3" in proc.stdout
    assert "alembic_version" in proc.stdout


def test_alembic_cli_without_database_is_one_line():
    closed = free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://nobody:x@127.0.0.1:{closed}/none"}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "FAILED: cannot reach the database" in output
    assert "Traceback" not in output

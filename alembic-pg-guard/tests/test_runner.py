"""The runner (_runner) on a real PostgreSQL, in-process, on a project of its own."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic_pg_guard import GuardError, GuardSettings, attach, load_config, upgrade
from guard_helpers import clean_env, make_project
from sqlalchemy import URL, create_engine, inspect, text
from sqlalchemy.pool import NullPool

FIRST = '''"""gadget"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


def upgrade():
    op.create_table("gadget", sa.Column("id", sa.BigInteger(), primary_key=True))


def downgrade():
    op.drop_table("gadget")
'''


def test_a_read_only_database_is_one_line_and_nothing_changes(
    tmp_path: Path, database: URL, monkeypatch: pytest.MonkeyPatch
):
    """A standby or default_transaction_read_only: was a 90-line traceback (issue 22, #14)."""
    project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    engine = create_engine(database, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f'ALTER DATABASE "{database.database}" SET default_transaction_read_only = on'
            )
        cfg = attach(load_config(project.root / "alembic.ini"), GuardSettings(url=database))
        with pytest.raises(GuardError) as refused:
            upgrade(cfg)
        line = str(refused.value)
        assert "\n" not in line and "is read-only (transaction_read_only is on" in line, line
        assert inspect(engine).get_table_names() == []  # not even the history table
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET default_transaction_read_only = off")
            conn.exec_driver_sql(
                f'ALTER DATABASE "{database.database}" RESET default_transaction_read_only'
            )
        engine.dispose()


SLEEPER = '''"""gadget, then a long statement holding its lock"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


def upgrade():
    op.create_table("gadget", sa.Column("id", sa.BigInteger(), primary_key=True))
    op.execute("SELECT pg_sleep(120)")


def downgrade():
    op.drop_table("gadget")
'''


@pytest.mark.slow
def test_a_killed_runner_s_statement_ends_with_it(tmp_path: Path, database: URL):
    """kill -9 of `migrate` mid-revision: its backend (and its ACCESS EXCLUSIVE lock) went
    on until the statement ended (issue 22, #13); now it ends within seconds."""
    project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(SLEEPER)
    runner = subprocess.Popen(
        [sys.executable, "-m", "alembic_pg_guard", "migrate"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(database, poolclass=NullPool)
    sleeping = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = 'SELECT pg_sleep(120)'"
    )

    def count() -> int:
        with engine.connect() as conn:
            return conn.scalar(sleeping)

    try:
        assert wait_until(lambda: count() == 1, 60), "the revision never started"
        runner.kill()
        runner.wait(10)
        assert wait_until(lambda: count() == 0, 10), "its statement outlived the runner"
        assert not inspect(engine).has_table("gadget")  # rolled back, lock released
    finally:
        if runner.poll() is None:
            runner.kill()
        engine.dispose()


def wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()

"""Lock timeouts (alembic-pg-guard): a revision blocked by another session is
retried with backoff, naming the blocker (PID, query, age); when the retries run out the
runner fails in one line, exit 1."""

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, inspect

from src.config import Settings
from tests.helpers import (
    backend_pid,
    child_env,
    copy_project,
    current_version,
    fresh_engine,
    popen_python,
    upgrade,
    write_revision_on_head,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

REVISION = "b10cced0a17e"
BLOCKER_QUERY = "LOCK TABLE country IN ACCESS SHARE MODE"


def blocked_project(tmp_path: Path) -> tuple[Path, str]:
    """A copy of the project with one more revision, an ALTER TABLE country."""
    project = copy_project(tmp_path / "project")
    head = write_revision_on_head(
        project / "alembic" / "versions",
        REVISION,
        "def upgrade() -> None:\n"
        '    op.add_column("country", sa.Column("late", sa.Text()))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("country", "late")\n',
    )
    return project, head


def migrator(project: Path, url, **limits: str) -> subprocess.Popen:
    env = child_env(url, MIGRATION_LOCK_TIMEOUT_MS="200", **limits)
    return popen_python("-m", "alembic_pg_guard", "migrate", cwd=project, env=env)


def hold_lock(blocker: Connection) -> int:
    """The lock the revision's ALTER TABLE waits for, held idle in transaction. Its pid."""
    blocker.exec_driver_sql(BLOCKER_QUERY)
    return backend_pid(blocker)


def test_blocked_alter_is_retried_and_succeeds_once_the_blocker_ends(
    settings: Settings, sync_engine: Engine, tmp_path: Path
):
    """A session holds a lock on country, idle in transaction. The migrator's ALTER is
    cancelled by lock_timeout, says who blocks it, and retries; once that session ends,
    the retry applies the revision."""
    project, _ = blocked_project(tmp_path)
    with fresh_engine(sync_engine) as (url, engine):
        upgrade(settings.for_database(url))
        with engine.connect() as blocker:
            blocker_pid = hold_lock(blocker)
            proc = migrator(
                project,
                url,
                MIGRATION_LOCK_RETRIES="20",
                MIGRATION_LOCK_RETRY_DELAY_SECONDS="0.2",
            )
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:  # until the first retry is announced
                seen.append(line)
                if "lock timeout in revision" in line:
                    break
            else:
                raise AssertionError(f"no retry announced: {''.join(seen)}")
            blocker.rollback()
        out, err = proc.communicate(timeout=120)
        retry = seen[-1]
        assert proc.returncode == 0, "".join(seen) + err
        assert f"revision {REVISION}" in retry and "attempt 1 of 21" in retry, retry
        assert f"blocked by pid {blocker_pid}" in retry, retry
        assert BLOCKER_QUERY in retry and "idle in transaction for " in retry, retry
        assert "upgraded from" in out and REVISION in out, out
        assert current_version(engine) == {REVISION}
        assert "late" in {c["name"] for c in inspect(engine).get_columns("country")}


def test_retries_exhausted_fail_in_one_line(
    settings: Settings, sync_engine: Engine, tmp_path: Path
):
    """The blocker stays: after MIGRATION_LOCK_RETRIES retries the runner exits 1 with one
    line naming the revision, the blocker and the setting; nothing is applied."""
    project, head = blocked_project(tmp_path)
    with fresh_engine(sync_engine) as (url, engine):
        upgrade(settings.for_database(url))
        with engine.connect() as blocker:
            blocker_pid = hold_lock(blocker)
            proc = migrator(
                project,
                url,
                MIGRATION_LOCK_RETRIES="2",
                MIGRATION_LOCK_RETRY_DELAY_SECONDS="0.1",
            )
            out, err = proc.communicate(timeout=120)
            blocker.rollback()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        retries = [line for line in err.splitlines() if "retrying in" in line]
        assert proc.returncode == 1, out + err
        assert "Traceback" not in out + err, err
        assert len(errors) == 1, err
        assert len(retries) == 2, err
        (line,) = errors
        assert f"revision {REVISION}" in line and "3 attempt(s)" in line, line
        assert f"blocked by pid {blocker_pid}" in line and BLOCKER_QUERY in line, line
        assert "MIGRATION_LOCK_RETRIES" in line and "MIGRATION_LOCK_TIMEOUT_MS=200" in line
        assert current_version(engine) == {head}


def test_retries_are_jittered_and_bounded_by_total_time(
    settings: Settings, sync_engine: Engine, tmp_path: Path
):
    """Many short attempts, each retry after a random share of a doubling delay (never in
    step with another migrator), until MIGRATION_LOCK_RETRY_TOTAL_SECONDS is spent even
    though MIGRATION_LOCK_RETRIES allows far more: then one line naming both settings."""
    project, head = blocked_project(tmp_path)
    with fresh_engine(sync_engine) as (url, engine):
        upgrade(settings.for_database(url))
        with engine.connect() as blocker:
            hold_lock(blocker)
            proc = migrator(
                project,
                url,
                MIGRATION_LOCK_RETRIES="1000",
                MIGRATION_LOCK_RETRY_DELAY_SECONDS="0.05",
                MIGRATION_LOCK_RETRY_TOTAL_SECONDS="2",
            )
            out, err = proc.communicate(timeout=60)
            blocker.rollback()
        delays = [
            float(line.rsplit("retrying in ", 1)[1].rstrip("s"))
            for line in err.splitlines()
            if "retrying in" in line
        ]
        (line,) = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1, out + err
        assert 2 <= len(delays) < 1000, err
        for n, delay in enumerate(delays, 1):  # half of each doubling step is random
            step = min(max(0.05, 10), 0.05 * 2 ** (n - 1))
            assert step / 2 - 0.01 <= delay <= step + 0.01, (n, delays)
        assert len({round(d / (0.05 * 2**n), 2) for n, d in enumerate(delays)}) > 1, delays
        assert f"{len(delays) + 1} attempt(s)" in line, line
        assert "MIGRATION_LOCK_RETRY_TOTAL_SECONDS" in line, line
        assert current_version(engine) == {head}

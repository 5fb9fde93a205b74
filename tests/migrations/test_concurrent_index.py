"""Concurrent index builds' own waiting policy (alembic-pg-guard): CREATE INDEX CONCURRENTLY
waits for every older transaction, on any table; that wait is bounded by
MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS, not MIGRATION_LOCK_TIMEOUT_MS."""

import subprocess
import time

import pytest
from sqlalchemy import Engine, text

from src.config import PROJECT_ROOT, Settings
from tests.helpers import (
    child_env,
    current_version,
    eventually,
    fresh_engine,
    open_snapshot,
    popen_python,
    script_directory,
    upgrade,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

# The first of the project's concurrent-index revisions, and the one before it.
CONCURRENT = "d6afc1b465f9"


def waiting_index_builds(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
            )
        )


def migrator(url, **limits: str) -> subprocess.Popen:
    env = child_env(url, MIGRATION_LOCK_TIMEOUT_MS="200", MIGRATION_LOCK_RETRIES="0", **limits)
    return popen_python("-m", "alembic_pg_guard", "migrate", cwd=PROJECT_ROOT, env=env)


def test_concurrent_index_outwaits_a_transaction_longer_than_lock_timeout(
    settings: Settings, sync_engine: Engine
):
    """A snapshot open on another table, well past MIGRATION_LOCK_TIMEOUT_MS: the
    project's concurrent-index revisions wait for it and succeed once it ends."""
    (head,) = script_directory().get_heads()
    before = script_directory().get_revision(CONCURRENT).down_revision
    assert isinstance(before, str)
    with fresh_engine(sync_engine) as (url, engine):
        upgrade(settings.for_database(url), target=before)
        with engine.connect() as reader:
            open_snapshot(reader)
            proc = migrator(url)
            eventually(lambda: waiting_index_builds(engine) > 0, "an index build waiting", 60)
            # Ten lock timeouts' worth: without its own policy the build is cancelled.
            time.sleep(2)
            assert proc.poll() is None, proc.communicate()
            reader.rollback()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert current_version(engine) == {head}
        with engine.connect() as conn:
            invalid = conn.scalar(text("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
        assert invalid == 0


def test_concurrent_index_wait_is_bounded_by_its_own_setting(
    settings: Settings, sync_engine: Engine
):
    """The snapshot stays open: after MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS the runner
    fails in one line naming the revision, the setting and the session it waited for; a
    rerun once that session ends succeeds (the revision drops its INVALID leftover)."""
    (head,) = script_directory().get_heads()
    before = script_directory().get_revision(CONCURRENT).down_revision
    assert isinstance(before, str)
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        upgrade(fresh, target=before)
        with engine.connect() as reader:
            reader_pid = open_snapshot(reader)
            proc = migrator(url, MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS="1000")
            out, err = proc.communicate(timeout=120)
            reader.rollback()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1, out + err
        assert "Traceback" not in err and len(errors) == 1, err
        (line,) = errors
        assert f"revision {CONCURRENT}" in line, line
        assert "MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS=1000" in line, line
        assert f"pid {reader_pid}" in line, line
        assert current_version(engine) == {before}

        assert upgrade(fresh).startswith("database upgraded")
        assert current_version(engine) == {head}

"""The migration lock (one migrator at a time, a bounded wait) and the per-migration
lock/statement timeouts, which come from Settings."""

import time
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from alembic.util import CommandError
from alembic_pg_guard import GuardError, GuardSettings, migration_lock
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from src.config import PROJECT_ROOT, Settings
from src.migrations import guard_settings
from tests.helpers import (
    child_env,
    config_for,
    current_version,
    fresh_engine,
    row_counts,
    run_python,
    schema_diff,
    schema_snapshot,
    script_directory,
    write_revision,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def waiting(settings: Settings, seconds: float) -> GuardSettings:
    return replace(guard_settings(settings), lock_wait_seconds=seconds)


def test_migration_lock_is_exclusive_and_bounded(settings: Settings, sync_engine: Engine):
    """Held on one connection (by raw id), a second migration_lock() gives up on time."""
    limits = waiting(settings, 0.5)
    with fresh_engine(sync_engine) as (_, engine):
        with engine.connect() as holder:
            holder.execute(select(func.pg_advisory_lock(limits.lock_id)))
            started = time.monotonic()
            with pytest.raises(GuardError, match=r"held the migration lock for over 0\.5s"):
                with migration_lock(engine, limits):
                    pytest.fail("took a lock that another session holds")
            assert 0.5 <= time.monotonic() - started < 3
            holder.execute(select(func.pg_advisory_unlock(limits.lock_id)))
        with migration_lock(engine, limits):
            pass  # free again


@pytest.mark.parametrize(
    "migrator",
    [("-m", "alembic_pg_guard", "migrate"), ("-m", "alembic", "upgrade", "head")],
    ids=["guard-migrate", "alembic-upgrade-head"],
)
def test_second_migrator_fails_fast_with_a_clear_message(
    settings: Settings, sync_engine: Engine, migrator
):
    """While the lock is held, a migrator with MIGRATION_LOCK_WAIT_SECONDS=1 gives up
    after about a second with one line that says what to do, and changes nothing."""
    with fresh_engine(sync_engine) as (url, engine):
        with migration_lock(engine, waiting(settings, 5)):
            started = time.monotonic()
            proc = run_python(
                *migrator,
                cwd=PROJECT_ROOT,
                env=child_env(url, MIGRATION_LOCK_WAIT_SECONDS="1"),
                timeout=60,
            )
            elapsed = time.monotonic() - started
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "another migration has held the migration lock for over 1s" in output
        assert "MIGRATION_LOCK_WAIT_SECONDS" in output
        assert "Traceback" not in output
        assert 1 <= elapsed < 20, elapsed
        assert current_version(engine) == set()


# The Settings field each revision runs into, the revision's one statement, and what
# the runner raises: a lock timeout (no retries here) is one line naming the revision.
TIMEOUTS = {
    "lock_timeout": (
        "migration_lock_timeout_ms",
        "op.add_column({table!r}, sa.Column('late', sa.Text()))",
        (CommandError, r"revision 5104a11e55ed .*could not get its locks .*lock timeout"),
    ),
    "statement_timeout": (
        "migration_statement_timeout_ms",
        'op.execute("SELECT pg_sleep(10)")',
        (DBAPIError, "canceling statement due to statement timeout"),
    ),
}


@pytest.mark.parametrize("field,statement,raised", TIMEOUTS.values(), ids=TIMEOUTS.keys())
def test_migration_timeouts_cancel_a_blocked_or_slow_revision(
    settings: Settings,
    sync_engine: Engine,
    scratch_alembic: Path,
    field: str,
    statement: str,
    raised: tuple[type[Exception], str],
):
    """A revision stuck behind a lock, or running too long, is cancelled by the
    per-migration timeouts from settings (not left queueing every other query)."""
    script = script_directory()
    (head,) = script.get_heads()
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        command.upgrade(config_for(fresh, engine), "head")
        table = sorted(row_counts(engine))[0]
        write_revision(
            scratch_alembic / "versions",
            "5104a11e55ed",
            head,
            f"def upgrade() -> None:\n    {statement.format(table=table)}\n\n\n"
            "def downgrade() -> None:\n    pass\n",
        )
        limited = fresh.model_copy(update={field: 300, "migration_lock_retries": 0})
        before = schema_snapshot(engine)
        with engine.connect() as reader:
            reader.execute(text(f'LOCK TABLE "{table}" IN ACCESS SHARE MODE'))  # a long read
            started = time.monotonic()
            with pytest.raises(raised[0], match=raised[1]):
                command.upgrade(config_for(limited, engine, scratch_alembic), "head")
            assert time.monotonic() - started < 5
            reader.rollback()
        assert current_version(engine) == {head}
        assert not schema_diff(before, schema_snapshot(engine))


def test_default_lock_attempts_are_short():
    """Every query on a table queues behind a migration's waiting ALTER for the whole lock
    timeout: by default an attempt gives up well under a second, and is retried (jittered,
    bounded by a total time) instead of waiting longer (issue 22, #12)."""
    defaults = guard_settings(Settings(_env_file=None))
    assert defaults.lock_timeout_ms <= 500
    assert GuardSettings().lock_timeout_ms <= 500
    assert defaults.lock_retries >= 20 and defaults.lock_retry_total_seconds >= 60

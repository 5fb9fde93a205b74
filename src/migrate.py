"""The one migration runner, shared by `pipenv run start`, the Docker image and the tests.

Concurrent migrators (replicas, a Job, CI) serialise on a session-level advisory lock
held on a dedicated connection: a transaction-level lock would be released by an
`autocommit_block()` half-way through. `alembic/env.py` takes the same lock, so the
plain `alembic` command line is just as safe.
"""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from src.cli import CommandFailure
from src.config import PROJECT_ROOT, get_settings

# Arbitrary but fixed: every migrator of this project must use the same key.
MIGRATION_LOCK_ID = 7_316_092_511_004_761_345


class MigrationError(CommandFailure):
    """A failure worth one line to the user."""


def alembic_config() -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    return cfg


def sync_engine() -> Engine:
    return create_engine(get_settings().sync_url, poolclass=NullPool)


def head_revisions(cfg: Config) -> set[str]:
    return set(ScriptDirectory.from_config(cfg).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


@contextmanager
def migration_lock(engine: Engine, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the project's advisory lock on a dedicated connection, waiting a bounded time."""
    wait = get_settings().migration_lock_wait_seconds if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while not conn.scalar(select(func.pg_try_advisory_lock(MIGRATION_LOCK_ID))):
            if time.monotonic() >= deadline:
                raise MigrationError(
                    f"another migration has held the migration lock for over {wait:g}s "
                    f"(pg_advisory_lock {MIGRATION_LOCK_ID}); is one stuck? "
                    "See pg_stat_activity, or raise MIGRATION_LOCK_WAIT_SECONDS"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            conn.scalar(select(func.pg_advisory_unlock(MIGRATION_LOCK_ID)))


def upgrade(target: str = "head") -> str:
    """Bring the database to `target`; cheap when it is already at head (no lock taken)."""
    cfg = alembic_config()
    heads = head_revisions(cfg)
    try:
        with sync_engine().connect() as conn:
            before = current_revisions(conn)
    except OperationalError as exc:
        url = get_settings().sync_url
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise MigrationError(
            f"cannot reach the database at {url.host}:{url.port}: {reason}"
        ) from None
    if target == "head" and before == heads:
        return f"database already at head ({', '.join(sorted(heads))})"
    try:
        command.upgrade(cfg, target)
    except CommandError as exc:  # e.g. env.py's lock wait ran out: one line, no traceback
        raise MigrationError(str(exc)) from None
    with sync_engine().connect() as conn:
        after = current_revisions(conn)
    was = ", ".join(sorted(before)) or "empty"
    return f"database upgraded from {was} to {', '.join(sorted(after))}"


def main() -> int:
    from src.cli import fail_on_errors

    with fail_on_errors():
        print(upgrade())
    return 0


if __name__ == "__main__":
    sys.exit(main())

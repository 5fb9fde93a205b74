"""The locked migration runner: one for every caller (a start script, a container, tests).

Concurrent migrators (replicas, a Job, CI) serialise on a session-level advisory lock
held on a dedicated connection: a transaction-level lock would be released by an
`autocommit_block()` half-way through. `run_env` (env.py) takes the same lock, so the
plain `alembic` command line is just as safe.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from alembic_pg_guard import _history as history
from alembic_pg_guard import _leftovers as leftovers
from alembic_pg_guard._config import settings_of
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._roles import ensure_app_role
from alembic_pg_guard._settings import GuardSettings, Hints
from alembic_pg_guard._steps import revision_failure


class MigrationError(GuardError):
    """A failure worth one line to the user."""


def sync_engine(settings: GuardSettings) -> Engine:
    return create_engine(settings.sync_url, poolclass=NullPool)


def head_revisions(cfg: Config) -> set[str]:
    return set(ScriptDirectory.from_config(cfg).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    return history.db_heads(connection)


def tls_problem(url: URL, reason: str, hints: Hints) -> str | None:
    """One line for a TLS failure (no TLS on the server, an unverifiable certificate)."""
    if "SSL" not in reason and "certificate" not in reason:
        return None
    return (
        f"TLS to the database at {url.host}:{url.port} failed ({reason}) with "
        f"sslmode={url.query.get('sslmode', 'prefer')}; {hints.tls}"
    )


def connection_problem(url: URL, exc: OperationalError, hints: Hints) -> str:
    """One line for a failed connection: refused login vs nothing listening."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    where = f"{url.host}:{url.port}"
    if "password authentication failed" in reason or "no password supplied" in reason:
        return (
            f"the database at {where} refused the login of {url.username!r} ({reason}); "
            f"{hints.login}"
        )
    if "does not exist" in reason:
        return f"the database at {where} answered, but {reason}; {hints.database}"
    if problem := tls_problem(url, reason, hints):
        return problem
    return f"cannot reach the database at {where} ({reason}); {hints.unreachable}"


def refuse_pooler(conn: Connection, hints: Hints) -> None:
    """Migrations need PostgreSQL itself: a session-level lock and DDL through a pooler may
    land on other server connections. PgBouncer hands each client its own cancel key, so
    the backend PID the driver was told differs from the one the server reports."""
    told = conn.connection.dbapi_connection.get_backend_pid()
    if told != conn.scalar(select(func.pg_backend_pid())):
        url = conn.engine.url
        raise MigrationError(
            f"{url.host}:{url.port} is a connection pooler (PgBouncer?), not PostgreSQL: "
            f"run migrations against PostgreSQL directly, and {hints.pooler}"
        )


def refuse_read_only(conn: Connection) -> None:
    """A standby, or default_transaction_read_only: one line before anything is tried."""
    if conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
        url = conn.engine.url
        raise MigrationError(
            f"the database at {url.host}:{url.port} is read-only (transaction_read_only is on: "
            "a standby, or default_transaction_read_only set for the database or the role): "
            "run migrations against the primary, with writes allowed"
        )


@contextmanager
def migration_lock(engine: Engine, settings: GuardSettings) -> Iterator[None]:
    """Hold the migration advisory lock on a dedicated connection, waiting a bounded time."""
    lock_id, wait_seconds = settings.lock_id, settings.lock_wait_seconds
    deadline = time.monotonic() + wait_seconds
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        refuse_pooler(conn, settings.hints)
        refuse_read_only(conn)
        while not conn.scalar(select(func.pg_try_advisory_lock(lock_id))):
            if time.monotonic() >= deadline:
                raise MigrationError(
                    f"another migration has held the migration lock for over {wait_seconds:g}s "
                    f"(pg_advisory_lock {lock_id}); is one stuck? "
                    f"See pg_stat_activity, or {settings.hints.lock_wait}"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            conn.scalar(select(func.pg_advisory_unlock(lock_id)))


def upgrade(cfg: Config, target: str = "head") -> str:
    """Bring the database to `target` (no migration when already at head), then the API's
    role up to date. Refuses a history edited below what the database has applied and
    INVALID indexes or stray NOT VALID constraints, even at head. Returns what it did."""
    settings = settings_of(cfg)
    script = ScriptDirectory.from_config(cfg)
    heads = set(script.get_heads())
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            refuse_pooler(conn, settings.hints)
            refuse_read_only(conn)
            before = current_revisions(conn)
            backfill = history.check(conn, history.CodeHistory.of(script, settings.hints))
    except OperationalError as exc:
        raise MigrationError(connection_problem(engine.url, exc, settings.hints)) from None
    if target == "head" and before == heads and not backfill:
        after = before
        done = f"database already at head ({', '.join(sorted(heads))})"
    else:
        run_alembic_upgrade(cfg, target)
        with engine.connect() as conn:
            after = current_revisions(conn)
        was = ", ".join(sorted(before)) or "empty"
        done = f"database upgraded from {was} to {', '.join(sorted(after))}"
        if before == after:
            done = f"database already at {was}; recorded its history ({history.TABLE})"
    with engine.connect() as conn:
        at = ", ".join(sorted(after)) or "empty"
        leftovers.refuse(conn, script, after, f"the database at {at} is not as its history says")
    if settings.app_role is not None:
        # Under the lock: concurrent GRANTs on one object can fail ("tuple concurrently updated").
        with migration_lock(engine, settings), engine.begin() as conn:
            done += f"; {ensure_app_role(conn, settings.app_role, settings.hints)}"
    return done


def run_alembic_upgrade(cfg: Config, target: str) -> None:
    """`alembic upgrade`, its failures as one line: env.py's (the lock wait, an edited
    history, lock timeouts, leftovers) and a revision's own error, which _steps tags."""
    try:
        command.upgrade(cfg, target)
    except CommandError as exc:
        raise MigrationError(str(exc)) from None
    except Exception as exc:
        if (message := revision_failure(exc)) is None:
            raise
        raise MigrationError(message) from None

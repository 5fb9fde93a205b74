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
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from src import history, leftovers
from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings
from src.roles import ensure_app_role
from src.steps import revision_failure

# Arbitrary but fixed: every migrator of this project must use the same key.
MIGRATION_LOCK_ID = 7_316_092_511_004_761_345
# Where a caller hands alembic/env.py its settings (else env.py reads the environment).
SETTINGS_ATTRIBUTE = "settings"


class MigrationError(CommandFailure):
    """A failure worth one line to the user."""


def alembic_config(settings: Settings | None = None) -> Config:
    """alembic.ini with absolute paths; `settings`, if given, reach env.py through it."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    if settings is not None:
        cfg.attributes[SETTINGS_ATTRIBUTE] = settings
    return cfg


def sync_engine(settings: Settings) -> Engine:
    return create_engine(settings.sync_url, poolclass=NullPool)


def head_revisions(cfg: Config) -> set[str]:
    return set(ScriptDirectory.from_config(cfg).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    return history.db_heads(connection)


def tls_problem(url: URL, reason: str) -> str | None:
    """One line for a TLS failure (no TLS on the server, an unverifiable certificate)."""
    if "SSL" not in reason and "certificate" not in reason:
        return None
    return (
        f"TLS to the database at {url.host}:{url.port} failed ({reason}) with "
        f"sslmode={url.query.get('sslmode', 'prefer')}; check POSTGRES_SSLMODE and "
        "POSTGRES_SSLROOTCERT (or sslmode= in DATABASE_URL)"
    )


def connection_problem(url: URL, exc: OperationalError) -> str:
    """One line for a failed connection: refused login vs nothing listening."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    where = f"{url.host}:{url.port}"
    if "password authentication failed" in reason or "no password supplied" in reason:
        return (
            f"the database at {where} refused the login of {url.username!r} ({reason}); "
            "check POSTGRES_USER/POSTGRES_PASSWORD (an embedded cluster keeps the password "
            "it was created with: pipenv run db-reset recreates it, deleting its data)"
        )
    if "does not exist" in reason:
        return f"the database at {where} answered, but {reason}; check POSTGRES_DB"
    if problem := tls_problem(url, reason):
        return problem
    return (
        f"cannot reach the database at {where} ({reason}); start it with `pipenv run db` "
        "(embedded) or `docker compose up -d db`, or check POSTGRES_HOST/POSTGRES_PORT"
    )


def refuse_pooler(conn: Connection) -> None:
    """Migrations need PostgreSQL itself: a session-level lock and DDL through a pooler may
    land on other server connections. PgBouncer hands each client its own cancel key, so
    the backend PID the driver was told differs from the one the server reports."""
    told = conn.connection.dbapi_connection.get_backend_pid()
    if told != conn.scalar(select(func.pg_backend_pid())):
        url = conn.engine.url
        raise MigrationError(
            f"{url.host}:{url.port} is a connection pooler (PgBouncer?), not PostgreSQL: "
            "run migrations against PostgreSQL directly (DATABASE_URL / POSTGRES_HOST and "
            "POSTGRES_PORT), and point only the API at the pooler (APP_DATABASE_URL)"
        )


@contextmanager
def migration_lock(engine: Engine, wait_seconds: float) -> Iterator[None]:
    """Hold the project's advisory lock on a dedicated connection, waiting a bounded time."""
    deadline = time.monotonic() + wait_seconds
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        refuse_pooler(conn)
        while not conn.scalar(select(func.pg_try_advisory_lock(MIGRATION_LOCK_ID))):
            if time.monotonic() >= deadline:
                raise MigrationError(
                    f"another migration has held the migration lock for over {wait_seconds:g}s "
                    f"(pg_advisory_lock {MIGRATION_LOCK_ID}); is one stuck? "
                    "See pg_stat_activity, or raise MIGRATION_LOCK_WAIT_SECONDS"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            conn.scalar(select(func.pg_advisory_unlock(MIGRATION_LOCK_ID)))


def upgrade(settings: Settings, target: str = "head", cfg: Config | None = None) -> str:
    """Bring the database to `target` (no migration when already at head), then the API's
    role (src/roles.py) up to date. Refuses a history edited below what the database has
    applied (src/history.py) and INVALID indexes or stray NOT VALID constraints, even at head.
    `cfg`: another migration history than the project's (the tests' scratch copies)."""
    if cfg is None:
        cfg = alembic_config(settings)
    else:
        cfg.attributes[SETTINGS_ATTRIBUTE] = settings
    script = ScriptDirectory.from_config(cfg)
    heads = set(script.get_heads())
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            refuse_pooler(conn)
            before = current_revisions(conn)
            backfill = history.check(conn, history.CodeHistory.of(script))
    except OperationalError as exc:
        raise MigrationError(connection_problem(engine.url, exc)) from None
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
    if settings.postgres_app_user is not None:
        # Under the lock: concurrent GRANTs on one object can fail ("tuple concurrently updated").
        with migration_lock(engine, settings.migration_lock_wait_seconds), engine.begin() as conn:
            done += f"; {ensure_app_role(conn, settings)}"
    return done


def run_alembic_upgrade(cfg: Config, target: str) -> None:
    """`alembic upgrade`, its failures as one line: env.py's (the lock wait, an edited
    history, lock timeouts, leftovers) and a revision's own error, which src.steps tags."""
    try:
        command.upgrade(cfg, target)
    except CommandError as exc:
        raise MigrationError(str(exc)) from None
    except Exception as exc:
        if (message := revision_failure(exc)) is None:
            raise
        raise MigrationError(message) from None


def main() -> int:
    with fail_on_errors():
        print(upgrade(read_settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

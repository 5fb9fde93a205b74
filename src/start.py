"""`pipenv run start`: a database (embedded if none answers) → migrations → uvicorn.

Ctrl-C or SIGTERM stops uvicorn, then the embedded PostgreSQL if this process started it;
one started separately (`pipenv run db`) or a Docker database is left running.
"""

import signal
import sys

import psycopg2
import uvicorn

from src import migrate
from src.cli import fail_on_errors
from src.config import Settings, get_settings
from src.embedded_pg import EmbeddedPostgres, from_settings


def connect_error(settings: Settings) -> str | None:
    """None when the configured database accepts our credentials, else the reason."""
    url = settings.sync_url
    try:
        psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=3,
        ).close()
    except psycopg2.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


def ensure_database(settings: Settings) -> EmbeddedPostgres | None:
    """Returns the embedded server when this call started it (so we stop it on exit)."""
    reason = connect_error(settings)
    if reason is None:
        return None
    url = settings.sync_url
    if not settings.db_is_local:
        raise migrate.MigrationError(
            f"cannot reach the database at {url.host}:{url.port}: {reason}"
        )
    pg = from_settings()
    if pg.is_running():
        raise migrate.MigrationError(f"the embedded PostgreSQL runs but refuses us: {reason}")
    pg.start()
    print(f"embedded PostgreSQL started on {pg.host}:{pg.port} (data in {pg.data_dir})")
    return pg


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)  # uvicorn installs its own while serving
    with fail_on_errors():
        settings = get_settings()
        pg = ensure_database(settings)
        try:
            print(migrate.upgrade())
            uvicorn.run(
                "src.main:app",
                host=settings.api_host,
                port=settings.api_port,
                proxy_headers=False,
            )
        finally:
            if pg is not None:
                pg.stop()
                print("embedded PostgreSQL stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`pipenv run start` / `dev`: a database (embedded if none answers) → migrations → src.serve.

Ctrl-C or SIGTERM stops uvicorn, then the embedded PostgreSQL if this process started it,
and only that exact server (same PID and start time): one started separately
(`pipenv run db`) or a Docker database is left running. `--reload` (`pipenv run dev`)
restarts the app when a file under src/ changes.
"""

import argparse
import errno
import signal
import socket
import sys
import urllib.request

import psycopg2

from devtools.embedded_pg import EmbeddedPostgres, ServerIdentity, from_settings
from src.cli import CommandFailure, fail_on_errors
from src.config import Settings, read_settings
from src.migrations import upgrade
from src.serve import serve


class StartError(CommandFailure):
    """A failure worth one line to the user."""


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
            **url.query,  # libpq's TLS parameters, as psycopg2 gets them everywhere else
        ).close()
    except psycopg2.OperationalError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
    return None


def is_login_refusal(reason: str) -> bool:
    return "authentication failed" in reason or "no password supplied" in reason


def ensure_database(settings: Settings) -> tuple[EmbeddedPostgres, ServerIdentity] | None:
    """The embedded server and its identity when this call started it (stop it on exit)."""
    reason = connect_error(settings)
    if reason is None:
        return None
    url = settings.sync_url
    if "SSL" in reason or "certificate" in reason:
        return None  # no embedded server can help: the runner says why, in one line
    if not settings.db_is_local:
        raise StartError(f"cannot reach the database at {url.host}:{url.port}: {reason}")
    pg = from_settings(settings)
    if pg.is_running():
        if is_login_refusal(reason):
            raise StartError(
                f"the embedded PostgreSQL refused the login of {url.username!r}: it was created "
                "with another POSTGRES_USER/POSTGRES_PASSWORD; put those back in .env, or run "
                "`pipenv run db-stop && pipenv run db-reset` (deletes its data)"
            )
        raise StartError(f"the embedded PostgreSQL runs but refuses us: {reason}")
    if is_login_refusal(reason):
        raise StartError(
            f"the database at {url.host}:{url.port} refused the login of {url.username!r} "
            f"({reason}); it is not this project's embedded PostgreSQL: check "
            "POSTGRES_USER/POSTGRES_PASSWORD, or set another POSTGRES_PORT"
        )
    started = pg.start()
    if started is None:  # it came up meanwhile (a `pipenv run db` elsewhere): not ours
        return None
    print(f"embedded PostgreSQL started on {pg.host}:{pg.port} (data in {pg.data_dir})")
    return pg, started


def check_api_port(host: str, port: int) -> None:
    """Fail before starting anything when API_PORT cannot be served."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise StartError(f"cannot serve on API_HOST {host}: {exc.strerror}") from None
    if _answers_as_this_api(host, port):
        raise StartError(
            f"the API already runs on http://{host}:{port} (another `pipenv run start`?): "
            "use that one, stop it, or set another API_PORT"
        )
    raise StartError(
        f"API_PORT {port} on {host} is taken by another program: stop it, or set another API_PORT"
    )


def _answers_as_this_api(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
            return b'"status":"ok"' in response.read()
    except OSError:
        return False


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.start", description=__doc__)
    parser.add_argument("--reload", action="store_true", help="restart on changes in src/")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # uvicorn installs its own while serving
    with fail_on_errors():
        settings = read_settings()
        if problem := settings.startup_problem():
            raise StartError(problem)
        check_api_port(settings.api_host, settings.api_port)
        ours = ensure_database(settings)
        try:
            print(upgrade(settings))
            serve(settings, args.reload)
        finally:
            if ours is not None:
                pg, identity = ours
                if pg.stop(only=identity):
                    print("embedded PostgreSQL stopped")
                else:
                    print("embedded PostgreSQL left running: it is no longer the one we started")
    return 0


if __name__ == "__main__":
    sys.exit(main())

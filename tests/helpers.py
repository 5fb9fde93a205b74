"""Helpers shared by the tests: servers, subprocesses, scratch projects, schema snapshots.

The one place tests share code from (no test module imports another).
"""

import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic_pg_guard import attach
from alembic_pg_guard import upgrade as guard_upgrade
from sqlalchemy import URL, Connection, Engine, MetaData, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from devtools.embedded_pg import (
    UNPRIVILEGED_USER,
    env_for_url,
    free_port,
    port_in_use,
    traversable_tempdir,
)
from src.config import PROJECT_ROOT, Settings
from src.migrations import alembic_config, guard_settings

T = TypeVar("T")
API_KEY = "test-api-key-0123456789"
# The API's least-privilege role in the tests (the migration runner creates it).
APP_ROLE = "country_api_test"
APP_ROLE_PASSWORD = "test-app-role-password"
PROJECT_FILES = ("src", "devtools", "alembic", "alembic.ini", "pyproject.toml")
VERSION_TABLE = "alembic_version"
# The runner's bookkeeping tables: not part of the schema a revision builds.
RUNNER_TABLES = frozenset({VERSION_TABLE, "alembic_version_history"})


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 90) -> httpx.Response:
    """The first answer of a server `proc` is starting; fails at once if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.communicate()[0] if proc.stdout else ""
            raise AssertionError(f"exited {proc.returncode}: {output}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds}s")


def eventually(check: Callable[[], T | None], what: str, seconds: float = 20) -> T:
    """`check()`'s first truthy answer; fails if none comes before the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        time.sleep(0.02)


@contextmanager
def serve_api(env: dict[str, str], seconds: float = 90, cwd: Path = PROJECT_ROOT) -> Iterator[str]:
    """`python -m src.serve` (what the image runs, with its edge limits from `env`'s
    settings) on a free loopback port, of the project at `cwd`: its base URL once /health
    answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.serve"],
        cwd=cwd,
        env={**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)},
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would fill up and stall the server
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/health", proc, seconds).status_code == 200
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def one_line_failure(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a command that failed as the project promises."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def alembic_failure(proc: subprocess.CompletedProcess) -> str:
    """one_line_failure, for the alembic command line: its INFO log lines come first."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if not line.startswith("INFO ")]
    return line


@contextmanager
def fresh_database(server: Engine) -> Iterator[URL]:
    """An empty database on the test server, dropped afterwards (advisory locks are
    per database, so it does not contend with the session database's migrators)."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        try:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != "42501":  # insufficient_privilege
                raise
            pytest.skip("needs a fresh database: give TEST_DATABASE_URL's user CREATEDB")
    try:
        yield server.url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_engine(server: Engine) -> Iterator[tuple[URL, Engine]]:
    """A fresh_database and an unpooled engine on it, disposed before the database is dropped."""
    with fresh_database(server) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield url, engine
        finally:
            engine.dispose()


def asgi_client(app, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A client calling `app` in this process (whoever holds the app runs its lifespan)."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def scratch_config(settings: Settings, script_location: Path) -> Config:
    """The project's alembic config for `settings`, reading revisions from `script_location`."""
    cfg = alembic_config(settings)
    cfg.set_main_option("script_location", str(script_location))
    return cfg


def upgrade(settings: Settings, target: str = "head", cfg: Config | None = None) -> str:
    """The guard's runner with `settings`, on the project's history or `cfg`'s."""
    return guard_upgrade(attach(cfg or alembic_config(), guard_settings(settings)), target)


def config_for(settings: Settings, engine: Engine, script_location: Path | None = None) -> Config:
    """The project's alembic config, run on `engine` (env.py uses the given connection)."""
    if script_location is None:
        cfg = alembic_config(settings)
    else:
        cfg = scratch_config(settings, script_location)
    cfg.attributes["connection"] = engine
    return cfg


def copy_project(dest: Path) -> Path:
    """What the alembic CLI needs of the project, copied into `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def child_env(url: URL | str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: this venv's tools first, the database at `url`
    (every POSTGRES_* too, so whatever .env says does not leak in), the test API key."""
    env = {**os.environ, "ENVIRONMENT": "test", "API_KEY": API_KEY}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if url is not None:
        env.update(env_for_url(url if isinstance(url, str) else url_string(url)))
    return {**env, **extra}


def pipenv_command() -> list[str]:
    """How to run pipenv here: the README's `pipenv`, or the interpreter that has it. Only
    a local run may lack it (CI installs it), and then the test skips saying so."""
    if found := shutil.which("pipenv"):
        return [found]
    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-c", "import pipenv"], capture_output=True)
    if probe.returncode == 0:
        return [base, "-m", "pipenv"]
    if os.environ.get("CI"):
        raise AssertionError("pipenv is not installed, and CI must run this test")
    pytest.skip("pipenv not found (local run only; CI installs it)")


def pipenv_project(dest: Path, dotenv: str) -> Path:
    """A scratch copy run by `pipenv run` on this venv, with `dotenv` as its .env."""
    copy_project(dest)
    for name in ("Pipfile", "Pipfile.lock"):
        shutil.copy2(PROJECT_ROOT / name, dest / name)
    (dest / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    (dest / ".env").write_text(dotenv)
    return dest


def pipenv_run(project: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    """`NAME=value ... pipenv run <script>` in `project`, as typed in a fresh terminal."""
    return subprocess.run(
        [*pipenv_command(), "run", script],
        cwd=project,
        env=pipenv_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def pipenv_env(**extra: str) -> dict[str, str]:
    """A shell's environment, as if `pipenv run` were typed in a fresh terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPENV_", "VIRTUAL_ENV"))}
    for name in Settings.model_fields:  # what the test session's own pipenv loaded
        env.pop(name.upper(), None)
    return {**env, "PIPENV_VENV_IN_PROJECT": "1", "PIPENV_IGNORE_VIRTUALENVS": "1", **extra}


def run_python(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def popen_python(
    *args: str, cwd: Path, env: dict[str, str], stderr: int = subprocess.PIPE
) -> subprocess.Popen:
    """`python *args` started in the background, stdout (and stderr) piped as text."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )


def backend_pid(conn: Connection) -> int:
    """The PostgreSQL backend pid of `conn`, as pg_stat_activity and the runner name it."""
    return conn.connection.dbapi_connection.get_backend_pid()


def idle_in_transaction(conn: Connection, role: str | None = None) -> int:
    """Sessions of this database (of `role`, if given) left inside a transaction."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%' AND (CAST(:role AS text) IS NULL OR usename = :role)"
    )
    return conn.scalar(text(sql), {"role": role})


def open_snapshot(conn: Connection, table: str = "country") -> int:
    """What pg_dump or a long report does: a REPEATABLE READ snapshot, open. Its pid."""
    conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
    conn.exec_driver_sql(f"SELECT count(*) FROM {table}")
    return backend_pid(conn)


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def revisions_in_order(script: ScriptDirectory):
    return list(reversed(list(script.walk_revisions("base", "heads"))))


def write_revision(versions: Path, revision: str, down_revision: str | None, body: str) -> Path:
    """A revision file in a (temporary) versions folder."""
    path = versions / f"{revision}_test_only.py"
    path.write_text(
        f'"""test-only revision {revision}"""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n" + body
    )
    return path


def write_revision_on_head(versions: Path, revision: str, body: str) -> str:
    """A test-only revision on top of the project's head (write_revision); that head."""
    (head,) = script_directory().get_heads()
    write_revision(versions, revision, head, body)
    return head


# A schema snapshot, from the catalogs: what a migration may change, order-insensitive.
SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length,
               numeric_precision, is_nullable, column_default, is_identity
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, con.convalidated,
               pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public'""",
    "indexes": """
        SELECT tbl.relname, idx.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
        FROM pg_index i
        JOIN pg_class idx ON idx.oid = i.indexrelid
        JOIN pg_class tbl ON tbl.oid = i.indrelid
        JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
        WHERE ns.nspname = 'public'""",
    "sequences": """
        SELECT sequence_name, data_type FROM information_schema.sequences
        WHERE sequence_schema = 'public'""",
    "types": """
        SELECT t.typname, t.typtype, pg_catalog.format_type(t.typbasetype, NULL),
               array_to_string(array_agg(e.enumlabel ORDER BY e.enumsortorder), ',')
        FROM pg_type t JOIN pg_namespace ns ON ns.oid = t.typnamespace
        LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE ns.nspname = 'public' AND t.typtype IN ('e', 'd')
        GROUP BY t.typname, t.typtype, t.typbasetype""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "triggers": """
        SELECT tbl.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class tbl ON tbl.oid = t.tgrelid
        JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
        WHERE ns.nspname = 'public' AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
        WHERE ns.nspname = 'public' AND p.prokind IN ('f', 'p')""",
    "extensions": "SELECT extname FROM pg_extension",
}


def schema_snapshot(engine: Engine) -> dict[str, set[tuple]]:
    """Everything about the schema but alembic's own version table."""
    with engine.connect() as conn:
        snapshot = {
            kind: {tuple(row) for row in conn.exec_driver_sql(sql)}
            for kind, sql in SNAPSHOT_QUERIES.items()
        }
    for kind in ("columns", "constraints", "indexes", "triggers"):
        snapshot[kind] = {row for row in snapshot[kind] if row[0] not in RUNNER_TABLES}
    return snapshot


def schema_diff(before: dict[str, set[tuple]], after: dict[str, set[tuple]]) -> list[str]:
    lines = []
    for kind in before:
        lines += [f"{kind} gone: {row}" for row in sorted(before[kind] - after[kind], key=str)]
        lines += [f"{kind} new:  {row}" for row in sorted(after[kind] - before[kind], key=str)]
    return lines


def current_version(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        has_table = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not has_table:
            return set()
        return set(conn.scalars(text("SELECT version_num FROM alembic_version")))


def row_counts(engine: Engine) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return {
            name: conn.scalar(select(func.count()).select_from(table))
            for name, table in metadata.tables.items()
        }


def add_to_country_model(models: Path, line: str) -> None:
    """Add `line` (a mapped column) to the Country model of a scratch copy's src/models.py."""
    source = models.read_text()
    anchor = '    __tablename__ = "country"\n'
    assert anchor in source, "src/models.py has no Country model to extend"
    models.write_text(source.replace(anchor, anchor + line + "\n", 1))
    if "String" not in source.split("class ", 1)[0]:
        models.write_text("from sqlalchemy import String\n" + models.read_text())


def unreachable_url() -> str:
    """A database URL nothing listens on: a child given it can reach no database at all."""
    return f"postgresql://nobody:x@127.0.0.1:{free_port()}/none"


def pgbouncer_binary() -> str:
    """Debian's pgbouncer: CI installs it (.ci/run); only a local run may skip without it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        raise AssertionError("pgbouncer is not installed, and CI must run this test")
    pytest.skip(
        "pgbouncer not installed (local run only; CI installs it: apt-get install pgbouncer)"
    )


@contextmanager
def pgbouncer(
    server: URL, users: dict[str, str], pool_mode: str = "transaction", tls: Any = None
) -> Iterator[int]:
    """A real PgBouncer on a free loopback port in front of `server` (PostgreSQL), its port.
    `tls`: a trustme LeafCert it presents to clients (client_tls_sslmode=require)."""
    binary = pgbouncer_binary()
    with traversable_tempdir("country-pgbouncer-") as tmp:
        port = free_port()
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            entry = pwd.getpwnam(UNPRIVILEGED_USER)
            run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        (tmp / "userlist.txt").write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        lines = [
            "[databases]",
            f"* = host={server.host} port={server.port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {tmp / 'userlist.txt'}",
            f"pool_mode = {pool_mode}",
            "max_client_conn = 500",
            "default_pool_size = 10",
            f"logfile = {tmp / 'pgbouncer.log'}",
            f"pidfile = {tmp / 'pgbouncer.pid'}",
            "ignore_startup_parameters = extra_float_digits",
        ]
        if tls is not None:
            tls.private_key_pem.write_to_path(str(tmp / "server.key"))
            tls.cert_chain_pems[0].write_to_path(str(tmp / "server.crt"))
            lines += [
                "client_tls_sslmode = require",
                f"client_tls_key_file = {tmp / 'server.key'}",
                f"client_tls_cert_file = {tmp / 'server.crt'}",
            ]
        (tmp / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        for path in tmp.iterdir():
            path.chmod(0o600 if path.name == "server.key" else 0o644)
            if run_as:
                os.chown(path, run_as["user"], run_as["group"])
        if run_as:
            os.chown(tmp, run_as["user"], run_as["group"])
        proc = subprocess.Popen(
            [binary, str(tmp / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            **run_as,
        )
        try:
            deadline = time.monotonic() + 15
            while not port_in_use("127.0.0.1", port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (tmp / "pgbouncer.log").read_text()
                        if (tmp / "pgbouncer.log").exists()
                        else ""
                    )
                    raise AssertionError(f"pgbouncer did not start: {proc.stderr.read()!r} {log}")
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ScratchProject:
    """A copy of the project (copy_project) migrated on its own database: edit its models
    and run its alembic, migrate and gates as a user would, each as a subprocess."""

    def __init__(self, root: Path, url: URL):
        self.root, self.url = copy_project(root), url
        self.models = root / "src" / "models.py"
        self.versions = root / "alembic" / "versions"
        self.env = child_env(url, TEST_DATABASE_URL=url_string(url))

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return run_python(*args, cwd=self.root, env={**self.env, **extra})

    def alembic(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return self.run("-m", "alembic", *args, **extra)

    def edit_models(self, old: str, new: str) -> None:
        source = self.models.read_text()
        assert old in source, f"src/models.py has no {old!r}"
        self.models.write_text(source.replace(old, new))

    def revisions(self) -> set[Path]:
        return set(self.versions.glob("*.py"))

    def new_revision(self, before: set[Path]) -> str:
        """The one revision file written since `before`, its source."""
        (path,) = self.revisions() - before
        return path.read_text()

    def query(self, sql: str, **params: Any) -> list[tuple]:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

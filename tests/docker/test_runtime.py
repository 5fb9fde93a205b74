"""The containers' commands, run here: the exact `migrate` and `api` commands and
healthchecks read from docker-compose.yml and the Dockerfile, against an embedded
PostgreSQL, in a copy of /app as the runtime stage builds it (only what it COPYs, so no
.env, devtools/, bench/ or tests/) with the environment compose would give them.
"""

import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from alembic_pg_guard import code_history
from dotenv import dotenv_values

from devtools.embedded_pg import EmbeddedPostgres, bin_dir, cluster_in, free_port
from src.config import PROJECT_ROOT, Settings
from src.migrations import alembic_config
from tests.docker.compose import (
    IMAGE_ROOT,
    VENV_BIN,
    command_argv,
    dockerfile_copies,
    dockerfile_healthcheck,
    dockerignore_rules,
    healthcheck_argv,
    ignored,
    interpolate,
    published_ports,
    runtime_stage,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/app as the runtime stage fills it from the build context: each COPY source, less
    what .dockerignore leaves out (the venv comes from the build stage: this one's)."""
    root = tmp_path_factory.mktemp("app")
    rules = dockerignore_rules()
    for flags, sources, destination in dockerfile_copies(runtime_stage()):
        if "from" in flags:
            continue
        target = root / posixpath.relpath(posixpath.join(IMAGE_ROOT, destination), IMAGE_ROOT)
        for source in sources:
            origin = PROJECT_ROOT / source
            if origin.is_dir():  # the folder's contents go into the destination
                files = {path: target / path.relative_to(origin) for path in origin.rglob("*")}
            elif destination.endswith("/") or len(sources) > 1:
                files = {origin: target / origin.name}
            else:
                files = {origin: target}
            for path, copy in files.items():
                if path.is_file() and not ignored(path.relative_to(PROJECT_ROOT).as_posix(), rules):
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copy)
    assert (root / "src" / "main.py").is_file() and (root / "alembic.ini").is_file()
    return root


def image_env() -> dict[str, str]:
    """The image's environment: none of this machine's settings or Python paths, then the
    runtime stage's ENV with /app/.venv/bin as this venv's bin."""
    settings_keys = {name.upper() for name in Settings.model_fields}
    dropped = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_keys | dropped}
    for keyword, arguments in runtime_stage():
        if keyword != "ENV":
            continue
        for word in shlex.split(arguments):
            key, equals, value = word.partition("=")
            assert equals, f"ENV {arguments}: use KEY=value"
            value = re.sub(r"\$(PATH\b|\{PATH\})", lambda _: env.get("PATH", os.defpath), value)
            env[key] = value.replace(f"{IMAGE_ROOT}/.venv/bin", str(VENV_BIN))
    assert env["PATH"].startswith(f"{VENV_BIN}{os.pathsep}"), env["PATH"]
    return env


def container_env(service: dict, services: dict, pg: EmbeddedPostgres) -> dict[str, str]:
    """What compose gives the service's container, with `db` at the embedded cluster:
    the image's environment, .env (env_file: .env.example's values, this cluster's
    credentials), then the service's `environment`, then db:5432 mapped to where the
    cluster listens. Not tests.helpers.child_env: that one points DATABASE_URL at the
    database, where compose empties it and gives POSTGRES_HOST=db."""
    env = image_env()
    env.update({k: v for k, v in dotenv_values(PROJECT_ROOT / ".env.example").items() if v})
    env.update(POSTGRES_USER=pg.user, POSTGRES_PASSWORD=pg.password, POSTGRES_DB=pg.database)
    env.update({k: interpolate(str(v)) for k, v in service.get("environment", {}).items()})

    assert env["POSTGRES_HOST"] == "db" and "db" in services
    ((_, _, db_port),) = published_ports(services["db"])
    assert env["POSTGRES_PORT"] == db_port
    env.update(POSTGRES_HOST=pg.host, POSTGRES_PORT=str(pg.port))
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path = PROJECT_ROOT):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def on_port(argv: list[str], port: int) -> list[str]:
    """A healthcheck argv probing `port` instead of the container's 8765."""
    replaced = [re.sub(r"(127\.0\.0\.1|localhost):8765\b", f"127.0.0.1:{port}", a) for a in argv]
    assert replaced != argv, argv
    return replaced


def test_the_image_copy_has_no_tooling(image_root):
    """What the commands below run in: what the runtime stage COPYs (src/, alembic/,
    alembic.ini), so an import of the tooling fails there as it would in the image."""
    names = {path.name for path in image_root.iterdir()}
    assert {"src", "alembic", "alembic.ini"} <= names, names
    assert not names & {"devtools", "bench", "tests", "docs", ".env", ".venv"}, names
    env = image_env()
    for package in ("devtools", "bench", "tests"):
        proc = run(["python", "-c", f"import {package}"], env, cwd=image_root)
        assert "ModuleNotFoundError" in proc.stderr, (package, proc.stderr)


def test_migrate_then_api_commands_run_as_compose_runs_them(services, cluster_root, image_root):
    pg = cluster_in(cluster_root)
    pg.start()
    try:
        migrate = command_argv(services["migrate"]["command"])
        env = container_env(services["migrate"], services, pg)
        heads = ", ".join(sorted(code_history(alembic_config()).heads))

        first = run(migrate, env, cwd=image_root)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"upgraded from empty to {heads}" in first.stdout
        again = run(migrate, env, cwd=image_root)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"already at head ({heads})" in again.stdout

        api_service = services["api"]
        port = free_port()
        env = container_env(api_service, services, pg)
        env.update(API_HOST="127.0.0.1", API_PORT=str(port))  # this machine, a free port
        api = command_argv(api_service["command"])
        health_checks = [
            on_port(healthcheck_argv(api_service["healthcheck"]["test"]), port),
            on_port(dockerfile_healthcheck(), port),
        ]
        proc = subprocess.Popen(
            api,
            cwd=image_root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_for(f"{base}/health", proc, seconds=60).status_code == 200
            ready = httpx.get(f"{base}/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body.pop("cache") in {"subscribed", "not subscribed"}  # information only
            assert body == {"status": "ready", "revision": heads}
            # The edge's limits hold in the image too (src.serve; tests/test_serve.py).
            big = httpx.get(f"{base}/health", headers={"X-Big": "a" * 20_000}, timeout=5)
            assert big.status_code == 431, big.text
            for check in health_checks:
                result = run(check, env, cwd=image_root)
                assert result.returncode == 0, (check, result.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        # A graceful stop (uvicorn re-raises the SIGTERM it handled: 143 in a container).
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Finished server process" in output, output
        for check in health_checks:  # and they do fail when nothing answers
            assert run(check, env, cwd=image_root).returncode != 0, check
    finally:
        pg.destroy()


def test_db_healthcheck_fails_on_the_init_servers_socket_and_passes_over_tcp(
    services, cluster_root
):
    """The postgres image initialises through a temporary server on the unix socket only
    (listen_addresses=''); depending services must not start against that one."""
    pg = cluster_in(cluster_root, user="alembic-stuff", database="alembic-stuff")
    argv = healthcheck_argv(services["db"]["healthcheck"]["test"])
    argv = [interpolate(re.sub(r"(-p\s*|--port[= ])5432\b", rf"\g<1>{pg.port}", a)) for a in argv]
    # As in the postgres image: its variables, its binaries, no PG* of this machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PATH=f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        POSTGRES_USER=pg.user,
        POSTGRES_DB=pg.database,
        PGPORT=str(pg.port),
    )
    pg.init()
    try:
        data = socket_dir = str(pg.data_dir)  # the socket goes where the server may write
        options = f"-c listen_addresses='' -p {pg.port} -c unix_socket_directories={socket_dir}"
        log = str(pg.data_dir / "socket-only.log")
        pg._pg("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", log, "-o", options)
        env["PGHOST"] = socket_dir  # libpq's default socket, as in the image
        socket_only = run(["pg_isready", "-p", str(pg.port)], env)
        assert socket_only.returncode == 0, socket_only.stdout  # the server is up...
        assert run(argv, env).returncode != 0  # ...and the healthcheck does not pass
        pg.stop()

        pg.start()  # the real server: 127.0.0.1 over TCP
        result = run(argv, env)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        pg.destroy()

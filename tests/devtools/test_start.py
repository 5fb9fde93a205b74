"""`pipenv run start` end to end (embedded PostgreSQL → migrations → API, then SIGTERM),
its one-line refusals, and which PostgreSQL it stops."""

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.embedded_pg import free_port, port_in_use
from src.config import PROJECT_ROOT
from tests.helpers import child_env, one_line_failure, popen_python, run_python, wait_for

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


@pytest.fixture
def start_env(cluster_root: Path) -> dict[str, str]:
    """Settings for a `start` with its own embedded cluster and ports."""
    return child_env(
        DATABASE_URL="",
        POSTGRES_USER="starter",
        POSTGRES_PASSWORD="start-pw",
        POSTGRES_DB="start-db",
        POSTGRES_HOST="localhost",
        POSTGRES_PORT=str(free_port()),
        EMBEDDED_PG_DIR=str(cluster_root / "pgdata"),
        API_HOST="127.0.0.1",
        API_PORT=str(free_port()),
        ENVIRONMENT="local",
        API_KEY="start-test-key",
    )


def command(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python("-m", module, *args, cwd=PROJECT_ROOT, env=env)


def popen_start(env: dict[str, str]) -> subprocess.Popen:
    return popen_python("-m", "devtools.start", cwd=PROJECT_ROOT, env=env, stderr=subprocess.STDOUT)


@pytest.fixture
def running_start(start_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    proc = popen_start(start_env)
    base = f"http://127.0.0.1:{start_env['API_PORT']}"
    try:
        wait_for(f"{base}/health", proc)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        command("devtools.embedded_pg", "stop", env=start_env)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    return output


def test_start_serves_the_api_and_stops_its_database(start_env, running_start):
    proc, base = running_start
    db_port = int(start_env["POSTGRES_PORT"])
    answer = httpx.get(f"{base}/country/GB")
    assert answer.json()["alpha3"] == "GBR"
    assert "server" not in answer.headers  # no banner
    assert answer.headers["x-content-type-options"] == "nosniff"
    # The edge's limits (src.serve, tests/test_serve.py) hold for `start` too.
    assert httpx.get(f"{base}/health", headers={"X-Big": "a" * 20_000}).status_code == 431
    body = {"alpha2": "XD", "alpha3": "XDD", "name": "Startland"}
    key = {"X-API-Key": "start-test-key"}
    assert httpx.post(f"{base}/country", json=body, headers=key).status_code == 201
    assert httpx.get(f"{base}/country/XD").json()["name"] == "Startland"
    assert httpx.post(f"{base}/country", json=body, headers=key).status_code == 409
    assert httpx.get(f"{base}/ready").status_code == 200
    assert port_in_use("127.0.0.1", db_port)
    output = stop(proc)
    assert "embedded PostgreSQL started" in output
    assert "embedded PostgreSQL stopped" in output
    assert not port_in_use("127.0.0.1", db_port)


def test_dev_serves_with_the_same_limits(start_env):
    """`dev` (--reload) rebuilds the app in a child process: same server options."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.start", "--reload"],
        cwd=PROJECT_ROOT,
        env={**start_env, "MAX_HEADER_BYTES": "4096"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{start_env['API_PORT']}"
    try:
        assert wait_for(f"{base}/health", proc).status_code == 200
        assert httpx.get(f"{base}/health", headers={"X-Big": "a" * 3000}).status_code == 200
        answer = httpx.get(f"{base}/health", headers={"X-Big": "a" * 5000})
        assert answer.status_code == 431
        assert answer.json()["code"] == "request_header_fields_too_large"
        assert "server" not in answer.headers
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        command("devtools.embedded_pg", "stop", env=start_env)


def test_a_second_start_says_one_already_runs(start_env, running_start):
    line = one_line_failure(command("devtools.start", env=start_env))
    assert "the API already runs on" in line, line
    assert running_start[0].poll() is None  # the first one is untouched


def test_start_stops_only_the_server_it_started(start_env, running_start):
    """`db-stop` + `db` meanwhile: the PostgreSQL running at exit is not start's own."""
    proc, _ = running_start
    db_port = int(start_env["POSTGRES_PORT"])
    assert command("devtools.embedded_pg", "stop", env=start_env).returncode == 0
    started = command("devtools.embedded_pg", "start", env=start_env)
    assert started.returncode == 0, started.stderr
    output = stop(proc)
    assert "left running" in output
    assert port_in_use("127.0.0.1", db_port)
    assert command("devtools.embedded_pg", "status", env=start_env).returncode == 0


def test_a_failed_start_stops_the_postgresql_it_started(start_env):
    """The cluster exists with another password: start launches it, cannot log in, stops it."""
    assert command("devtools.embedded_pg", "start", env=start_env).returncode == 0
    assert command("devtools.embedded_pg", "stop", env=start_env).returncode == 0
    changed = {**start_env, "POSTGRES_PASSWORD": "changed-pw"}
    line = one_line_failure(command("devtools.start", env=changed))
    assert "refused the login of 'starter'" in line, line
    assert not port_in_use("127.0.0.1", int(start_env["POSTGRES_PORT"]))
    assert command("devtools.embedded_pg", "status", env=start_env).returncode == 3


def test_a_wrong_password_on_a_running_cluster_is_one_line(start_env, running_start):
    changed = {**start_env, "POSTGRES_PASSWORD": "changed-pw", "API_PORT": str(free_port())}
    for module, *args in (("alembic_pg_guard", "migrate"), ("devtools.start",)):
        line = one_line_failure(command(module, *args, env=changed))
        assert "refused the login of 'starter'" in line, (module, line)
    alembic = subprocess.run(
        ["alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env=changed,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "refused the login of 'starter'" in one_line_failure(alembic)


@pytest.mark.parametrize("variable", ["API_PORT", "POSTGRES_PORT"])
def test_a_busy_port_names_its_variable(start_env, variable):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(start_env[variable])))
        squatter.listen()
        proc = command("devtools.start", env=start_env)
    line = one_line_failure(proc)
    assert f"{variable} {start_env[variable]}" in line, line
    assert not port_in_use("127.0.0.1", int(start_env["POSTGRES_PORT"]))

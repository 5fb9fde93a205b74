"""`pipenv run start` end to end: embedded PostgreSQL → migrations → API, then SIGTERM."""

import os
import signal
import subprocess
import sys

import httpx

from devtools.embedded_pg import free_port, port_in_use
from src.config import PROJECT_ROOT
from tests.conftest import wait_for


def test_start_serves_the_api_and_stops_its_database(cluster_root):
    db_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": "",
        "POSTGRES_USER": "starter",
        "POSTGRES_PASSWORD": "start-pw",
        "POSTGRES_DB": "start-db",
        "POSTGRES_HOST": "localhost",
        "POSTGRES_PORT": str(db_port),
        "EMBEDDED_PG_DIR": str(cluster_root / "pgdata"),
        "API_PORT": str(api_port),
        "ENVIRONMENT": "local",
        "API_KEY": "start-test-key",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.start"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{api_port}"
        assert wait_for(f"{base}/country/GB", proc).json()["alpha3"] == "GBR"
        body = {"alpha2": "XD", "alpha3": "XDD", "name": "Startland"}
        key = {"X-API-Key": "start-test-key"}
        assert httpx.post(f"{base}/country", json=body, headers=key).status_code == 201
        assert httpx.get(f"{base}/country/XD").json()["name"] == "Startland"
        assert httpx.post(f"{base}/country", json=body, headers=key).status_code == 409
        assert httpx.get(f"{base}/ready").status_code == 200
        assert port_in_use("127.0.0.1", db_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "embedded PostgreSQL started" in output
    assert "embedded PostgreSQL stopped" in output
    assert not port_in_use("127.0.0.1", db_port)

"""Schemathesis against the app's own OpenAPI schema: a real server on its own database.

Property-based requests (valid and invalid) to every operation, with the API key, a
bounded number of examples per operation. Checks: no 5xx, responses conform to the
documented schemas, status codes and content types.
"""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.embedded_pg import EmbeddedPostgres, free_port, throwaway
from src.config import PROJECT_ROOT, env_for_url
from tests.helpers import wait_for

API_KEY = "schemathesis-key-0123456789"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    """uvicorn on a fresh, migrated cluster: the fuzzer's writes touch nothing else."""
    with throwaway(prefix="schemathesis-") as pg:
        yield from serve(pg)


def serve(pg: EmbeddedPostgres) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **env_for_url(pg.url),
        "ENVIRONMENT": "test",
        "API_KEY": API_KEY,
    }
    subprocess.run([sys.executable, "-m", "src.migrate"], cwd=PROJECT_ROOT, env=env, check=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.main:app", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/health", server, seconds=10).status_code == 200
        yield base
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def api_schema(live_server: str):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

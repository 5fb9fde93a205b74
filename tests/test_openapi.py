"""Schemathesis against the app's own OpenAPI schema: a real server on its own database.

Two runs, each with a bounded number of examples per operation and the API key:
- all modes (valid and invalid requests): no 5xx, responses conform to the documented
  schemas, status codes and content types; undeclared methods get 405 with `Allow`;
- positive data only (the coverage and fuzzing phases): every schema-valid request is
  accepted, so the schema promises no more than the validation allows.
"""

import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, HookContext
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.config import SchemathesisConfig

from devtools.embedded_pg import env_for_url, throwaway
from src.config import PROJECT_ROOT
from src.kit.pagination import encode_cursor
from tests.helpers import serve_api

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

API_KEY = "schemathesis-key-0123456789"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    unsupported_method,
    allow_header_conformance,
]
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    """`python -m src.serve` on a fresh, migrated cluster: the fuzzer's writes touch
    nothing else, and it meets the server's real limits."""
    with throwaway(prefix="schemathesis-") as pg:
        env = {**os.environ, **env_for_url(pg.url), "ENVIRONMENT": "test", "API_KEY": API_KEY}
        subprocess.run(
            [sys.executable, "-m", "alembic_pg_guard", "migrate"],
            cwd=PROJECT_ROOT,
            env=env,
            check=True,
        )
        with serve_api(env, seconds=10) as base:
            yield base


@pytest.fixture(scope="module")
def api_schema(live_server: str):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


def assigned(text: str) -> str:
    """`text` without unassigned or private-use code points outside the first plane (rules in
    the descriptions that a pattern cannot share with browsers: their Unicode differs)."""
    return "".join("x" if unicodedata.category(c) in ("Cn", "Co") else c for c in text)


def with_letter(text: str) -> str:
    """A name's letter or digit (Unicode L or N), which the description states: its first
    character that trimming keeps becomes one."""
    if any(unicodedata.category(c)[0] in "LN" for c in text):
        return text
    kept = next((i for i, c in enumerate(text) if not (c.isspace() or c == "\x85")), None)
    return text if kept is None else text[:kept] + "x" + text[kept + 1 :]


def map_case(context: HookContext, case: Case) -> Case:
    """The rules OpenAPI cannot state (all in the descriptions), taught to the fuzzer instead
    of relaxing the check: a cursor is one the API issues (the encoding of a sort key, not
    any base64url text), and a non-zero offset does not go with it; text has no unassigned
    code points; a name has a letter or digit."""
    if case.query and isinstance(case.query.get("q"), str):
        case.query["q"] = assigned(case.query["q"])
    if isinstance(case.body, dict):
        for field in ("name", "official_name"):
            if isinstance(case.body.get(field), str):
                case.body[field] = with_letter(assigned(case.body[field]))
    cursor = case.query.get("cursor") if case.query else None
    if isinstance(cursor, str) and re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        case.query["cursor"] = encode_cursor(cursor[:48])  # 64 characters at most
        if str(case.query.get("offset", 0)) != "0":  # an int, or its text in the coverage phase
            del case.query["offset"]
    return case


@pytest.fixture(scope="module")
def positive_schema(live_server: str):
    """Valid requests only, from the coverage phase (boundaries of every keyword) and the
    fuzzing phase (random valid data)."""
    config = SchemathesisConfig.from_dict(
        {
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "generation": {"mode": "positive"},
        }
    )
    loaded = schemathesis.openapi.from_url(f"{live_server}/openapi.json", config=config)
    loaded.hook(map_case)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")
positive = schemathesis.pytest.from_fixture("positive_schema")


@schema.parametrize()
@EXAMPLES
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)


@positive.parametrize()
@EXAMPLES
def test_schema_valid_requests_are_accepted(case):
    case.call_and_validate(
        headers={"X-API-Key": API_KEY}, checks=[*CHECKS, positive_data_acceptance]
    )


def test_no_trailing_slash_redirects(live_server: str):
    """One URL per resource: `/country/` is unknown (404), not a 307 nobody documents."""
    for path in ("/country/", "/country/GB/", "/health/"):
        response = httpx.get(f"{live_server}{path}")
        assert response.status_code == 404, (path, response.status_code)
        assert response.json()["code"] == "not_found"


def test_every_status_the_api_answers_is_documented(live_server: str):
    """Hostile and unlucky requests get the status their operation documents (the fuzzer
    sends valid HTTP and bodies only, so these are probed by hand)."""
    spec = httpx.get(f"{live_server}/openapi.json").json()
    api = httpx.Client(base_url=live_server, headers={"X-API-Key": API_KEY})
    mine, gone = "QZ", "QY"
    for code in (mine, "QZQ"):  # the fuzzer may have created either code
        api.delete(f"/country/{code}")
    assert api.post("/country", json={"alpha2": mine, "alpha3": "QZQ", "name": "Q"}).is_success
    api.delete(f"/country/{gone}")
    etag = api.get(f"/country/{mine}").headers["etag"]
    deep = "[" * 20_000 + "]" * 20_000  # under MAX_BODY_BYTES, too deep for the parser
    json_type = {"content-type": "application/json"}
    probes = [
        ("get", "/country", {"params": {"limit": 0}}, 422),
        ("get", "/country/{code}", {"headers": {"if-none-match": etag}}, 304),
        ("get", "/country/{code}", {"code": gone}, 404),
        ("get", "/country/{code}/subdivisions", {"params": {"cursor": "_w"}}, 422),
        ("get", "/country/{code}/subdivisions", {"code": gone}, 404),
        ("post", "/country", {"json": {"alpha2": mine}, "headers": {"x-api-key": ""}}, 401),
        ("post", "/country", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
        ("post", "/country", {"json": {"name": "x" * 100_000}}, 413),
        ("post", "/country", {"json": {"alpha2": mine, "alpha3": "QZR", "name": "Q"}}, 409),
        ("post", "/country", {"content": deep, "headers": json_type}, 400),
        ("patch", "/country/{code}", {"content": deep, "headers": json_type}, 400),
        ("patch", "/country/{code}", {"json": {}}, 422),
        ("patch", "/country/{code}", {"json": {"name": None}}, 422),
        ("patch", "/country/{code}", {"json": {"alpha3": "QZQ"}, "code": gone}, 404),
        ("delete", "/country/{code}", {"code": "Q1"}, 422),
        ("delete", "/country/{code}", {"code": gone}, 404),
    ]
    for method, path, kwargs, expected in probes:
        url = path.format(code=kwargs.pop("code", mine))
        response = api.request(method, url, **kwargs)
        assert response.status_code == expected, (method, url, response.text)
        documented = spec["paths"][path][method]["responses"]
        assert str(expected) in documented, (method, path, expected, sorted(documented))

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "408", "431", "500"} <= set(responses), (method, path)
            if path == "/health":  # liveness: no database, never shed (src/middleware.py)
                assert "503" not in responses
                continue
            assert "Retry-After" in responses["503"]["headers"], (method, path)

    put = api.put(f"/country/{mine}", json={})
    assert put.status_code == 405
    assert put.headers["allow"] == "DELETE, GET, HEAD, PATCH"

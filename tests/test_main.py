"""The application object: startup refusals, offline docs, OpenAPI contract, methods
(405, HEAD) and load shedding (src/middleware.py)."""

import asyncio
import json
import re
import secrets
import socket
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import text

from src.config import PLACEHOLDER_API_KEY, PROJECT_ROOT
from src.edge import READY_HEADROOM
from tests.helpers import child_env, serve_api


def import_app(database_url: str, **env: str) -> subprocess.CompletedProcess:
    """What `uvicorn src.main:app` does first: build the app from the environment."""
    return subprocess.run(
        [sys.executable, "-c", "from src.main import app"],
        cwd=PROJECT_ROOT,
        env=child_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


WEAK_KEYS = [
    "",
    PLACEHOLDER_API_KEY,
    "short",
    " " * 40,  # counted characters was all the old guard checked
    "a" * 40,
    "abababababababababababababababababab",  # long, two distinct characters
    "correct horse battery staple, longer than 32",  # spaces and commas: not a token
    "a-real-key-of-enough-length",  # 27 characters
]


@pytest.mark.slow
@pytest.mark.parametrize("key", WEAK_KEYS)
def test_production_refuses_a_missing_placeholder_or_weak_key(database_url, key):
    proc = import_app(database_url, ENVIRONMENT="production", API_KEY=key)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ENVIRONMENT=production needs")
    assert "secrets.token_urlsafe(32)" in proc.stderr  # says how to make a good one
    assert proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("key", [secrets.token_urlsafe(32), secrets.token_hex(16)])
def test_production_starts_with_a_generated_key(database_url, key):
    proc = import_app(database_url, ENVIRONMENT="production", API_KEY=key)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_local_accepts_the_placeholder(database_url):
    proc = import_app(database_url, ENVIRONMENT="local", API_KEY=PLACEHOLDER_API_KEY)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_bad_settings_are_one_line(database_url):
    proc = import_app(database_url, ENVIRONMENT="staging")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: invalid settings: ENVIRONMENT")
    assert proc.stderr.count("\n") == 1, proc.stderr


async def test_docs_use_only_assets_the_app_serves(anon):
    page = await anon.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", page.text)
    urls = re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert assets, page.text
    for asset in assets + urls:
        assert asset.startswith("/"), f"external asset {asset}"
        response = await anon.get(asset)
        assert response.status_code == 200, asset
    assert "//cdn" not in page.text and "https://" not in page.text


async def test_openapi_declares_the_api_key_for_writes_only(anon):
    spec = (await anon.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Required for POST, PATCH and DELETE (API_KEY in the settings).",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            secured = "security" in operation
            assert secured == (method in {"post", "patch", "delete"}), (method, path)
            if method in {"post", "patch"}:
                assert {"401", "413", "415", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/country/GB", "DELETE, GET, HEAD, PATCH"),  # was 415: the body guard ran first
        ("POST", "/country/GB", "DELETE, GET, HEAD, PATCH"),
        ("OPTIONS", "/country", "GET, HEAD, POST"),  # was `Allow: GET`, which omits POST
        ("DELETE", "/country", "GET, HEAD, POST"),
        ("PATCH", "/country/GB/subdivisions", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
    ],
)
async def test_undeclared_methods_are_405_with_every_allowed_method(client, method, path, allow):
    response = await client.request(method, path, json={"name": "x"})
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["code"] == "method_not_allowed"


async def test_unknown_paths_stay_404_and_every_answer_says_nosniff(client):
    for method, path in (("PUT", "/nowhere"), ("GET", "/country/GB"), ("GET", "/nowhere")):
        response = await client.request(method, path)
        assert response.headers["x-content-type-options"] == "nosniff", (method, path)
    assert (await client.put("/nowhere")).status_code == 404


HEAD_PATHS = [
    "/country",
    "/country?q=united&limit=2",
    "/country/gbr",
    "/country/ZZ",  # a 404 too: the same status as GET
    "/country/GB/subdivisions?limit=3",
    "/health",
    "/ready",
    "/openapi.json",
    "/docs",
    "/redoc",
]


@pytest.mark.parametrize("path", HEAD_PATHS)
async def test_head_answers_what_get_does_without_the_body(anon, path):
    """RFC 9110 §9.3.2: HEAD wherever GET works (was a 405 with `Allow: GET`)."""
    for _ in range(200):  # /ready names the cache's state: let it settle first
        if (await anon.get("/ready")).json().get("cache") == "subscribed":
            break
        await asyncio.sleep(0.02)
    get, head = await anon.get(path), await anon.head(path)
    assert head.status_code == get.status_code, head.text
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) > 0
    varying = {"x-request-id", "content-length"}
    assert {k: v for k, v in head.headers.items() if k not in varying} == {
        k: v for k, v in get.headers.items() if k not in varying
    }


async def test_head_honours_if_none_match_and_is_logged_as_head(anon, log_lines):
    etag = (await anon.get("/country/GB")).headers["etag"]
    lines = log_lines("json")
    head = await anon.head("/country/GB", headers={"If-None-Match": etag})
    assert head.status_code == 304
    assert head.headers["etag"] == etag
    assert head.content == b""
    (line,) = [json.loads(line) for line in lines() if '"src.access"' in line]
    assert (line["method"], line["route"], line["status"]) == ("HEAD", "/country/{code}", 304)


async def test_head_on_an_unknown_path_is_404(anon):
    head = await anon.head("/nowhere")
    assert head.status_code == 404
    assert head.content == b""


@pytest.mark.slow
def test_head_over_the_wire_sends_the_headers_and_no_body(database_url, migrated):
    """Through the real server (`python -m src.serve`): GET's Content-Length, then nothing."""
    with serve_api(child_env(database_url)) as base:
        get = httpx.get(f"{base}/country/GB")
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"HEAD /country/GB HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert int(headers[b"content-length"]) == len(get.content) > 0
    assert headers[b"etag"].decode() == get.headers["etag"]
    assert rest == b""


async def _until(check, requests: list[asyncio.Task]) -> None:
    """Wait (bounded, not timed) until `check()` holds, failing if a request ended early."""
    for _ in range(600):
        if await check():
            return
        assert not any(task.done() for task in requests), [t.result() for t in requests if t.done()]
        await asyncio.sleep(0.05)
    raise AssertionError("the held requests never filled the limit")


@pytest.mark.parametrize("app", [{"max_concurrent_requests": 2}], indirect=True)
async def test_a_busy_process_stays_ready_but_ready_is_still_bounded(client, migrated):
    """Past MAX_CONCURRENT_REQUESTS, /ready still answers 200 (was 503: a saturated fleet
    would all go unready at once), within READY_HEADROOM slots of its own."""
    release = asyncio.Event()
    reading: list[int] = []  # bodies the app has started to read: requests in flight

    async def held_body():
        reading.append(1)
        await release.wait()
        yield b"{}"

    json_type = {"content-type": "application/json"}
    posts = [
        asyncio.create_task(client.post("/country", content=held_body(), headers=json_type))
        for _ in range(2)
    ]

    async def both_held() -> bool:
        return len(reading) == 2

    await _until(both_held, posts)
    assert (await client.get("/country/GB")).status_code == 503  # the limit is full
    assert (await client.get("/ready")).status_code == 200
    assert (await client.get("/health")).status_code == 200

    with migrated.connect() as lock:  # readiness probes wait on the version table: held
        lock.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        probes = [asyncio.create_task(client.get("/ready")) for _ in range(READY_HEADROOM)]

        async def probes_waiting() -> bool:
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
            with migrated.connect() as conn:
                count = conn.scalar(text(waiting + "'alembic_version'::regclass"))
            return count == READY_HEADROOM

        await _until(probes_waiting, probes)
        past = await client.get("/ready")
        assert past.status_code == 503, past.text
        assert past.headers["retry-after"].isdigit()
        lock.rollback()
    assert [(await probe).status_code for probe in probes] == [200] * READY_HEADROOM
    release.set()
    assert [(await post).status_code for post in posts] == [422, 422]

"""src/middleware.py, in-process: what the app's own edge answers before any route."""

import json

import pytest


async def call(app, http_version: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """One request straight to the ASGI app: an HTTP client would always send a Host."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], json.loads(body)


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ([], "HTTP/1.1 request with no Host header"),
        ([(b"host", b"a"), (b"host", b"b")], "HTTP/1.1 request with 2 Host headers"),
    ],
)
async def test_http_11_without_exactly_one_host_is_400(app, db, headers, detail):
    """RFC 9112 §3.2; before: 200."""
    status, body = await call(app, "1.1", headers)
    assert status == 400
    assert body == {"detail": detail, "code": "bad_request"}


@pytest.mark.parametrize(
    ("http_version", "headers"), [("1.1", [(b"host", b"api.example")]), ("1.0", [])]
)
async def test_one_host_or_http_10_is_served(app, db, http_version, headers):
    status, _ = await call(app, http_version, headers)
    assert status == 200

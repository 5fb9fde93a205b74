"""The raw web limit: a bare ASGI callable under the same uvicorn, no framework at all.

`GET /country/{code}` answers each country's constant bytes (the app's exact body, read
once at startup) with the headers the app sends on a cache hit (etag, cache-control,
content-length, content-type, x-content-type-options, x-request-id taken or made), and
nothing else: no routing, validation, middleware, 304 or access line. What uvicorn and ASGI
alone cost per request, so cached app / raw is what the app spends on a hit, access line
included. Configured like the ceiling:

    DATABASE_URL=postgresql://... uvicorn bench.raw_web_app:app
"""

import os
import re
import uuid
from typing import Any

import asyncpg
import orjson
from starlette.types import Receive, Scope, Send

from bench.ceiling_app import COLUMNS, JSON, dsn, etag_for

PREFIX = "/country/"
REQUEST_ID = b"x-request-id"
VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
Headers = list[tuple[bytes, bytes]]


def hit_headers(body: bytes) -> Headers:
    """A cache hit's headers but the request ID, in the app's order."""
    return [
        (b"etag", etag_for(body).encode()),
        (b"cache-control", b"no-cache"),
        (b"content-length", str(len(body)).encode()),
        (b"content-type", JSON.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]


def error(status: int, detail: str, code: str) -> tuple[int, Headers, bytes]:
    body = orjson.dumps({"detail": detail, "code": code})
    return status, [*hit_headers(body)[2:]], body


class RawWebApp:
    """The answers by upper-cased code, alpha-2 and alpha-3, filled at startup."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.answers: dict[str, tuple[int, Headers, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        path: str = scope["path"]
        code = path[len(PREFIX) :].upper() if path.startswith(PREFIX) else ""
        if scope["method"] != "GET":
            answer = error(405, f"method {scope['method']} not allowed here", "method_not_allowed")
        elif (answer := self.answers.get(code)) is None:
            answer = error(404, f"country {code!r} not found", "not_found")
        status, headers, body = answer
        given = dict(scope["headers"]).get(REQUEST_ID, b"")
        rid = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()
        headers = [*headers, (REQUEST_ID, rid)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
            try:
                await self.load()
            except (OSError, asyncpg.PostgresError) as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})

    async def load(self) -> None:
        conn = await asyncpg.connect(dsn(self.database_url))
        try:
            rows: list[dict[str, Any]] = [
                dict(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM country")
            ]
        finally:
            await conn.close()
        for row in rows:
            body = orjson.dumps(row)
            for code in (row["alpha2"], row["alpha3"]):
                self.answers[code] = (200, hit_headers(body), body)


def __getattr__(name: str) -> RawWebApp:
    """`uvicorn bench.raw_web_app:app`: configured by the environment bench/run.py passes."""
    if name != "app":
        raise AttributeError(name)
    return RawWebApp(os.environ["DATABASE_URL"])

"""The app's edge, one pure-ASGI layer before routing (docs/edge.md): the request ID and the
access line, `nosniff`, the Host check, the drain's 503 and the concurrency limit. One layer,
not five: each was a coroutine and most a `send` wrapper on every request."""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src import logs
from src.drain import Drain, refuse_while_draining
from src.errors import RETRY_AFTER_SECONDS, error_response

NOSNIFF = (b"x-content-type-options", b"nosniff")  # browsers must not guess a type
CLOSE = (b"connection", b"close")
# /ready's slots past MAX_CONCURRENT_REQUESTS: room for the probers, not a way around it.
READY_HEADROOM = 2


def host_problem(scope: Scope) -> str | None:
    """An HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2); the protocol layer
    lets one without it through."""
    if scope.get("http_version") != "1.1":
        return None
    hosts = sum(name == b"host" for name, _ in scope["headers"])
    if hosts == 1:
        return None
    return f"HTTP/1.1 request with {'no Host header' if hosts == 0 else f'{hosts} Host headers'}"


class Edge:
    """Every answer carries its request ID and `nosniff`, and gets an access line. Past
    `limit` requests in flight, 503 + Retry-After at once; never /health, and /ready keeps a
    few slots of its own: a busy replica is still ready."""

    def __init__(self, app: ASGIApp, drain: Drain, limit: int, max_body_bytes: int) -> None:
        self.app = app
        self.drain = drain
        self.limit = limit
        self.ready_limit = limit + READY_HEADROOM
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = logs.request_id_of(scope["headers"])
        token = logs.request_id.set(rid)
        started = time.perf_counter_ns()
        status = 500  # if the app fails before it answers
        extra = [(logs.REQUEST_ID_HEADER, rid.encode()), NOSNIFF]
        if self.drain.draining and scope["path"] == "/health":
            extra.append(CLOSE)  # liveness is still answered while draining

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self._serve(scope, receive, send_with_headers)
        finally:
            logs.log_access(scope, status, started, rid)
            logs.request_id.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if problem := host_problem(scope):
            await error_response(400, problem)(scope, receive, send)
            return
        path = scope["path"]
        if self.drain.draining and path != "/health":
            await refuse_while_draining(scope, receive, send, self.max_body_bytes)
            return
        if path == "/health":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= (self.ready_limit if path == "/ready" else self.limit):
            busy = error_response(
                503,
                f"server busy ({self.limit} requests in flight), retry shortly",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

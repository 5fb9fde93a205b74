"""The app's own edge, before any routing or parsing: method and body guards, security
headers, load shedding. Pure ASGI (not BaseHTTPMiddleware), so GETs pass through at no cost.
"""

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.errors import RETRY_AFTER_SECONDS, error_response

BODY_METHODS = {"POST", "PUT", "PATCH"}
NOSNIFF = (b"x-content-type-options", b"nosniff")
# /ready's slots past MAX_CONCURRENT_REQUESTS: room for the probers, not a way around it.
READY_HEADROOM = 2


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class BodyGuard:
    """413 for bodies over `max_bytes` (declared or streamed), 415 for non-JSON bodies,
    422 for bodies that are not UTF-8."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        too_large = error_response(413, f"request body over {self.max_bytes} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        if not _is_json(headers.get("content-type", "")):
            response = error_response(
                415, "request body must be JSON (Content-Type: application/json)"
            )
            await response(scope, receive, send)
            return

        # Read the (bounded) body once, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")  # JSON is UTF-8; FastAPI would answer a bare 400
        except UnicodeDecodeError as exc:
            response = error_response(
                422,
                "request validation failed",
                [{"field": "body", "message": f"not valid UTF-8 at byte {exc.start}"}],
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MethodGuard:
    """405 with every method the path allows (Starlette's names the first route's only), or
    404, before any body is read; HEAD as GET without the body. GETs pay nothing."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "GET":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        judged = {**scope, "method": "GET"} if head else scope
        allowed: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(judged)
            if match is Match.FULL:
                if head:
                    await self._head(scope, judged, receive, send)
                else:
                    await self.app(scope, receive, send)
                return
            if match is Match.PARTIAL:
                allowed |= getattr(route, "methods", None) or set()
        if not allowed:  # no such path: 404 before the body guards judge its body
            await error_response(404, "Not Found")(scope, receive, send)
            return
        if "GET" in allowed:
            allowed.add("HEAD")
        response = error_response(
            405,
            f"method {scope['method']} not allowed here",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
        await response(scope, receive, send)

    async def _head(self, scope: Scope, as_get: Scope, receive: Receive, send: Send) -> None:
        """The GET answer, headers (Content-Length, ETag) as they are, without the body."""

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(as_get, receive, headers_only)
        finally:  # what routing found (the route template) is for the access line too
            scope.update({key: value for key, value in as_get.items() if key != "method"})


class HostRequired:
    """400 for an HTTP/1.1 request without exactly one Host header (RFC 9112 §3.2); the
    protocol layer lets it through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("http_version") == "1.1":
            hosts = sum(name == b"host" for name, _ in scope["headers"])
            if hosts != 1:
                missing = "no Host header" if hosts == 0 else f"{hosts} Host headers"
                await error_response(400, f"HTTP/1.1 request with {missing}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every response: browsers must not guess a type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ConcurrencyLimit:
    """Past `limit` requests in flight, a 503 with Retry-After at once (docs/edge.md);
    never /health, and /ready keeps a few slots of its own: a busy replica is still ready."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.ready_limit = limit + READY_HEADROOM
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        limit = self.ready_limit if scope["path"] == "/ready" else self.limit
        if self.in_flight >= limit:
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

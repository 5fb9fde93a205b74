"""Method and body guards, before any routing or parsing (the rest of the edge: src/edge.py).
Pure ASGI (not BaseHTTPMiddleware), so GETs pass through at no cost."""

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.errors import error_response

BODY_METHODS = {"POST", "PUT", "PATCH"}


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

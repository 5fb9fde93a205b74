"""`python -m src.serve`: the one way the API is served (image, compose, `start`, `dev`),
with the edge's limits from settings (docs/edge.md says why each exists)."""

import asyncio
import sys
import uuid

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings
from src.errors import ErrorBody
from src.logs import configure_logging
from src.main import create_app

# How long a refused connection's input is drained, so the client reads our 431/408.
LINGER_SECONDS = 2.0


def _error_bytes(status: int, reason: str, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 error response with the app's JSON error body, then close."""
    body = ErrorBody(detail=detail, code=code).model_dump_json(exclude_none=True).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        "x-content-type-options: nosniff\r\n"
        f"x-request-id: {uuid.uuid4()}\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds it lacks: headers over `max_header_bytes`
    get 431 before buffering; a request not whole within `read_timeout` gets 408 or a close."""

    max_header_bytes = 16 * 1024
    read_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0  # request line and header fields, as parsed
        self._raw_header_bytes = 0  # bytes read while the header section is unfinished
        self._in_headers = True  # until the parser has the current request's headers
        self._lingering = False
        self._read_timer: asyncio.TimerHandle | None = None
        self._arm_read_timer()  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)
        if self._in_headers and not self._lingering and not self.transport.is_closing():
            # An unfinished header section: the parser holds at most one read past this.
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > self.max_header_bytes:
                self._refuse_headers()

    def on_message_begin(self) -> None:
        if self._lingering:  # pipelined after a refused request: ignored
            return
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._read_timer is None:
            self._arm_read_timer()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._raw_header_bytes = 0
        if self._lingering:
            return
        if self._header_bytes > self.max_header_bytes:
            self._refuse_headers()  # complete but too large: the app never sees it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._lingering:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        if not self._lingering:
            super().on_message_complete()

    def _refuse_headers(self) -> None:
        self._refuse(
            431,
            "Request Header Fields Too Large",
            "request_header_fields_too_large",
            f"request headers over {self.max_header_bytes} bytes",
        )

    def _arm_read_timer(self) -> None:
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._in_headers:  # no app has this request yet: answer it ourselves
            self._refuse(
                408,
                "Request Timeout",
                "request_timeout",
                f"request not received within {self.read_timeout:g} s",
            )
        else:  # the app is reading the body: closing tells it (http.disconnect)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """What the parser refuses (two Content-Length, Content-Length with chunked, obs-fold,
        bare LF, a bad method...): the JSON error body, not uvicorn's plain text. It logged."""
        self._answer(400, "Bad Request", "bad_request", "invalid HTTP request")

    def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
        self.logger.warning("refused a request: %s %s", status, detail)
        self._answer(status, reason, code, detail)

    def _answer(self, status: int, reason: str, code: str, detail: str) -> None:
        """Answer, stop parsing, drop what the client still sends, close after a while."""
        self._lingering = True
        self._cancel_read_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request: ours would cut into that response
            return
        self.transport.write(_error_bytes(status, reason, code, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def protocol_for(settings: Settings) -> type[BoundedHttpTools]:
    """The HTTP protocol class with these settings' limits."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpTools,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "read_timeout": settings.request_read_timeout_seconds,
        },
    )


def server_options(settings: Settings) -> dict[str, object]:
    """uvicorn's options for these settings, shared by every way of serving."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        # uvicorn's limit_concurrency counts idle keep-alive connections and answers a
        # plain-text 503 without Retry-After: the app's ConcurrencyLimit does it instead.
        "limit_concurrency": None,
        "proxy_headers": False,
        "server_header": False,  # no `server: uvicorn` banner
        "access_log": False,  # the app writes its own, with request IDs (src/logs.py)
        "log_config": None,  # configure_logging's, not uvicorn's
    }


def serve(settings: Settings, reload: bool = False) -> None:
    """Serve the app with the settings' limits; `reload` (for `dev`) rebuilds it in a child
    process on changes under src/, which reads the settings itself (src.main:app)."""
    configure_logging(settings)
    options = server_options(settings)
    if reload:
        uvicorn.run(
            "src.main:app",
            http="src.serve:protocol",
            reload=True,
            reload_dirs=[str(PROJECT_ROOT / "src")],
            **options,  # type: ignore[arg-type]
        )
        return
    uvicorn.run(create_app(settings), http=protocol_for(settings), **options)  # type: ignore[arg-type]


def __getattr__(name: str) -> type[BoundedHttpTools]:
    """`src.serve:protocol` for `dev`'s reloading child, built from its own settings."""
    if name == "protocol":
        global protocol
        protocol = protocol_for(read_settings())
        return protocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> int:
    with fail_on_errors():
        settings = read_settings()
        if problem := settings.startup_problem():
            raise CommandFailure(problem)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

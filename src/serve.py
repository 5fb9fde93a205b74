"""`python -m src.serve`: the one way the API is served (image, compose, `start`, `dev`),
with the edge's limits from settings (docs/edge.md says why each exists)."""

import asyncio
import errno
import functools
import logging
import os
import re
import socket
import sys
import uuid
from collections.abc import Callable, Sized

import uvicorn
from uvicorn.main import STARTUP_FAILURE

from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings
from src.drain import Drain, DrainingServer, KeepIdleOpenOnShutdown
from src.errors import RETRY_AFTER_SECONDS, ErrorBody
from src.logs import configure_logging
from src.main import create_app

# How long a refused connection's input is drained, so the client reads our 431/408/503.
LINGER_SECONDS = 2.0
logger = logging.getLogger("uvicorn.error")  # where uvicorn's protocols log


def _error_bytes(
    status: int, reason: str, code: str, detail: str, request_id: str | None = None
) -> bytes:
    """A whole HTTP/1.1 error response with the app's JSON error body, then close."""
    body = ErrorBody(detail=detail, code=code).model_dump_json(exclude_none=True).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        "x-content-type-options: nosniff\r\n"
        f"x-request-id: {request_id or uuid.uuid4()}\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpTools(KeepIdleOpenOnShutdown):
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


# At most one warning this often about connections refused past MAX_CONNECTIONS.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0


class RefusalLog:
    """Counts connections refused past MAX_CONNECTIONS (both ways of refusing) and logs their
    number at most once per REFUSAL_LOG_INTERVAL_SECONDS: a flood must not flood the logs."""

    def __init__(self) -> None:
        self.refusals = 0  # since the last warning
        self.logged_at = -REFUSAL_LOG_INTERVAL_SECONDS

    def refused(self, now: float, max_connections: int) -> None:
        self.refusals += 1
        if now - self.logged_at >= REFUSAL_LOG_INTERVAL_SECONDS:
            logger.warning(
                "refused %d connection(s) past MAX_CONNECTIONS=%d with 503",
                self.refusals,
                max_connections,
            )
            self.refusals = 0
            self.logged_at = now


REFUSALS = RefusalLog()


class CappedHttpTools(BoundedHttpTools):
    """At most `max_connections` open connections per process (idle keep-alive ones too):
    past it, a connection gets a canned 503 with Retry-After and the JSON error body the
    moment it is accepted, and is closed, without a parser, a request or the app. Requests
    otherwise wait unseen in the accept queue and the event loop (docs/edge.md). EagerAccept
    refuses most of them before this class exists; this catches those libuv accepts."""

    max_connections = 256
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refuse_connection(transport)
            return
        super().connection_made(transport)

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        """Answer 503 and close, reading nothing (not counted in `connections`)."""
        self._refused = True
        self.transport = transport
        transport.write(_busy_bytes(self.max_connections))
        if transport.can_write_eof():
            # Close our side, then drop what the client sends until it closes (or a short
            # while): closing with its request unread would reset, and lose our answer.
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()
        REFUSALS.refused(self.loop.time(), self.max_connections)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> None:  # a refused connection: the transport closes itself
        if not self._refused:
            super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._refused:
            super().connection_lost(exc)


def _busy_bytes(max_connections: int) -> bytes:
    """The canned 503 of a connection past MAX_CONNECTIONS: the JSON error body, Retry-After."""
    before, after = _busy_parts(max_connections)
    return before + str(uuid.uuid4()).encode() + after


@functools.cache
def _busy_parts(max_connections: int) -> tuple[bytes, bytes]:
    """The canned 503 built once, split where its request ID goes (a flood pays one uuid4)."""
    mark = "-request-id-"
    response = _error_bytes(
        503,
        "Service Unavailable",
        "service_unavailable",
        f"server busy ({max_connections} connections open), retry shortly",
        request_id=mark,
    ).replace(b"\r\n\r\n", f"\r\nretry-after: {RETRY_AFTER_SECONDS}\r\n\r\n".encode(), 1)
    before, after = response.split(mark.encode())
    return before, after


def protocol_for(settings: Settings) -> type[BoundedHttpTools]:
    """The HTTP protocol class with these settings' limits."""
    return type(
        "BoundedHttpTools",
        (CappedHttpTools,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "read_timeout": settings.request_read_timeout_seconds,
            "max_connections": settings.max_connections,
        },
    )


# Errors of accept() that mean "out of descriptors or memory": wait, as asyncio does.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 1.0
READ_BYTES = 65536
# A refused request that may have a body still on its way (then the socket lingers).
BODY_HEADERS = re.compile(rb"\r\n(content-length|transfer-encoding):", re.IGNORECASE)


class EagerAccept:
    """Accepts every connection waiting on a listening socket each time the loop polls, on a
    second descriptor of that socket: uvloop's libuv (1.45 and later) accepts one connection
    per loop turn, so under load new ones waited seconds in the kernel's queue (docs/edge.md).
    Past `max_connections` the canned 503 is written right there, before any protocol object;
    the others are handed to the loop as the server's own connections."""

    batch = 1024  # accepts per wake-up at most, so the loop's other work still runs

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener_fd: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Sized,
        max_connections: int,
    ) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.connections = connections  # the open, served ones (uvicorn's set)
        self.max_connections = max_connections
        self.arriving: set[asyncio.Task] = set()  # handed to the loop, not yet connected
        self.lingering: dict[socket.socket, asyncio.TimerHandle] = {}  # refused, not closed
        self.listener = socket.socket(fileno=os.dup(listener_fd))
        self.listener.setblocking(False)
        self.loop.add_reader(self.listener, self._accept)

    def close(self) -> None:
        """Stop accepting (the server closes its own descriptor of the socket)."""
        self.loop.remove_reader(self.listener)
        self.listener.close()

    def _accept(self) -> None:
        for _ in range(self.batch):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    logger.error("accept() failed: %s; retrying in %g s", exc, ACCEPT_RETRY_SECONDS)
                    self.loop.remove_reader(self.listener)
                    self.loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)
                    return
                continue  # e.g. ECONNABORTED: that client is gone
            if len(self.connections) + len(self.arriving) >= self.max_connections:
                self._refuse(sock)
            else:
                self._hand_over(sock)

    def _resume(self) -> None:
        if self.listener.fileno() != -1:
            self.loop.add_reader(self.listener, self._accept)

    def _hand_over(self, sock: socket.socket) -> None:
        task = self.loop.create_task(self.loop.connect_accepted_socket(self.protocol_factory, sock))
        self.arriving.add(task)
        task.add_done_callback(self._arrived)

    def _arrived(self, task: asyncio.Task) -> None:
        self.arriving.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.debug("an accepted connection failed to start: %s", exc)

    def _refuse(self, sock: socket.socket) -> None:
        """The canned 503 and our FIN at once. Closing on unread input would reset the
        connection and lose the answer: a request already whole (no body) is read and the
        socket closed; else what the client sends is dropped until it closes, or a while."""
        try:
            # One segment with the answer and our FIN (MSG_MORE holds it for the FIN): it
            # fits a new socket's buffer, and wakes the client once.
            sock.send(_busy_bytes(self.max_connections), socket.MSG_MORE | socket.MSG_DONTWAIT)
            sock.shutdown(socket.SHUT_WR)
            received = sock.recv(READ_BYTES, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            received = b""  # nothing sent yet
        except OSError:  # the client is gone already
            sock.close()
            return
        REFUSALS.refused(self.loop.time(), self.max_connections)
        if received.endswith(b"\r\n\r\n") and not BODY_HEADERS.search(received):
            sock.close()
            return
        self.loop.add_reader(sock, self._drop, sock)
        self.lingering[sock] = self.loop.call_later(LINGER_SECONDS, self._release, sock)

    def _drop(self, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_BYTES, socket.MSG_DONTWAIT):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._release(sock)  # end of input (or an error): the client has our answer

    def _release(self, sock: socket.socket) -> None:
        timer = self.lingering.pop(sock, None)
        if timer is not None:
            timer.cancel()
            self.loop.remove_reader(sock)
            sock.close()


class EagerServer(DrainingServer):
    """The production server: DrainingServer with an EagerAccept on each listening socket."""

    def __init__(self, config: uvicorn.Config, drain: Drain, max_connections: int) -> None:
        super().__init__(config, drain=drain)
        self.max_connections = max_connections
        self.accepts: list[EagerAccept] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol_factory() -> asyncio.Protocol:  # as uvicorn's own, given to create_server
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self.accepts = [
            EagerAccept(
                loop,
                sock.fileno(),
                protocol_factory,
                self.server_state.connections,
                self.max_connections,
            )
            for server in self.servers
            for sock in server.sockets
        ]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for accept in self.accepts:  # before uvicorn closes its listeners: ours would stay
            accept.close()
        await super().shutdown(sockets=sockets)


def server_options(settings: Settings) -> dict[str, object]:
    """uvicorn's options for these settings, shared by every way of serving."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": settings.drain_timeout_seconds,  # then tasks are cancelled
        # uvicorn's limit_concurrency counts idle keep-alive connections and answers a
        # plain-text 503 without Retry-After: the app's edge (src/edge.py) does it instead.
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
    app = create_app(settings)
    config = uvicorn.Config(app, http=protocol_for(settings), **options)  # type: ignore[arg-type]
    # uvicorn.run, with the drain flag and an eager accept past the connection cap
    server = EagerServer(config, drain=app.state.drain, max_connections=settings.max_connections)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn re-raises it once drained
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)


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

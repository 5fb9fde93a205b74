"""Request IDs (X-Request-ID, taken or made, on every response) and structured logs (JSON or
text via structlog): one access line per request, every line of it carrying its ID
(docs/performance.md says why the access line skips stdlib logging)."""

import asyncio
import atexit
import io
import itertools
import logging
import logging.config
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from starlette.types import Scope
from structlog.typing import EventDict, ExcInfo, Processor

from src.config import Settings

REQUEST_ID_HEADER = b"x-request-id"
# What we accept from a client or a proxy: short, and safe to put in a log line.
VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
ACCESS_LOGGER = "src.access"
request_id: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds the current request's ID (or "-") to every record; drops terminal colours."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        return True


# Raw in a log line, these would start a forged line (C0, DEL, C1, U+2028/9), drive the
# reader's terminal (ESC) or reorder what it shows (bidi controls): logged escaped instead.
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TEXT_ESCAPES = {
    c: _NAMED.get(chr(c), f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")
    for c in range(0x2070)
    if UNSAFE.match(chr(c))
}
JSON_ESCAPES = {c: f"\\u{c:04x}" for c in TEXT_ESCAPES if c >= 0x7F}  # orjson does C0


def escape_text(value: str) -> str:
    """`value` with every UNSAFE character written as `\\n`, `\\x1b`, `\\u2028`..."""
    return value if value.isprintable() else value.translate(TEXT_ESCAPES)


def _escape_fields(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    """Text lines: every field escaped (the message as well); a traceback or stack as
    lines of its own, indented, so that none of them reads as a record."""
    for key, value in event_dict.items():
        if key == "stack":
            event_dict[key] = _indented(value)
        elif isinstance(value, str) or key == "event":
            event_dict[key] = escape_text(str(value))
    return event_dict


def _indented(text: str) -> str:
    return "\n".join(f"  {escape_text(line)}" for line in text.strip("\n").split("\n"))


def _plain_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """structlog's plain traceback (rich's prints locals: secrets), indented and escaped."""
    out = io.StringIO()
    structlog.dev.plain_traceback(out, exc_info)
    sio.write("\n" + _indented(out.getvalue()))


def _orjson_text(obj: Any, **kwargs: Any) -> str:
    """orjson for structlog's JSONRenderer, as text: one serializer for both paths. orjson
    escapes C0 only; the rest of UNSAFE (never outside a string) gets JSON's `\\u` too."""
    text = orjson.dumps(obj, **kwargs).decode()
    return text if text.isascii() and "\x7f" not in text else text.translate(JSON_ESCAPES)


def _rendering(log_format: str) -> list[Processor]:
    """The last steps of every line, from either path."""
    if log_format == "text":
        return [
            _escape_fields,
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_traceback),
        ]
    return [
        structlog.processors.EventRenamer("message"),
        structlog.processors.JSONRenderer(serializer=_orjson_text),
    ]


# Printable ASCII but `"` and `\`: what JSON writes as it is, so the access line's values
# can go into it without a serializer (the others are escaped as orjson would).
JSON_VERBATIM = re.compile(r"[ !#-\[\]-~]*")


def _json_inner(value: str) -> str:
    """`value` as the text between a JSON string's quotes, as `_orjson_text` writes it."""
    return _orjson_text(value)[1:-1]


# What a request leaves for its access line: when it ended (time.time_ns), how long it took
# (ns), method, path, status, route template, client (host, port) and request ID.
Entry = tuple[int, int, str, str, int, str | None, tuple[str, int] | None, str]


class AccessLog:
    """The access line, rendered by hand in the shape structlog gives every other line: its
    processor chain cost as much as the rest of a cached hit (docs/performance.md). A request
    only queues its values; the lines are rendered together when the loop's turn ends."""

    def __init__(self, level: str, log_format: str, stream: TextIO) -> None:
        self.enabled = logging.getLevelNamesMapping()[level.upper()] <= logging.INFO
        self.render = self._text_lines if log_format == "text" else self._json_lines
        self.stream = stream
        self._pending: list[Entry] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # where a flush is scheduled
        self._routes: dict[str | None, str] = {None: "null"}  # route templates, as JSON

    def write(self, scope: Scope, status: int, started_ns: int, rid: str) -> None:
        """Queues the request's line for the end of this turn of the event loop."""
        self._pending.append(
            (
                time.time_ns(),
                time.perf_counter_ns() - started_ns,
                scope["method"],
                scope["path"],
                status,
                getattr(scope.get("route"), "path", None),
                scope.get("client"),
                rid,
            )
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing to batch with
            self.flush()
            return
        if self._flush_on is not loop:  # none scheduled on this loop (a stopped one may hold one)
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """The lines of this turn of the event loop, rendered and written at once: under load,
        one system call for many requests' lines instead of one each."""
        self._flush_on = None
        if self._pending:
            entries, self._pending = self._pending, []
            self.stream.write(self.render(entries))
            self.stream.flush()

    def _text_lines(self, entries: list[Entry]) -> str:
        lines = []
        for now, elapsed, method, path, status, route, client, rid in entries:
            message = escape_text(f"{method} {path} {status}")
            client = _address(client)
            lines.append(
                f"{_timestamp(now)} [info     ] {message:<30} [{ACCESS_LOGGER}] "
                f"client={client if client is None else escape_text(client)} "
                f"duration_ms={_milliseconds(elapsed)} method={escape_text(method)} "
                f"request_id={rid} route={route if route is None else escape_text(route)} "
                f"status={status}\n"
            )
        return "".join(lines)

    def _json_lines(self, entries: list[Entry]) -> str:
        lines = []
        routes = self._routes
        for now, elapsed, method, path, status, route, client, rid in entries:
            message = f"{method} {path} {status}"
            client = _address(client)
            if not JSON_VERBATIM.fullmatch(f"{message} {client}"):  # the rare line to escape
                method, message = _json_inner(method), _json_inner(message)
                client = client if client is None else _json_inner(client)
            route_json = routes.get(route) or self._route_json(route)
            client_json = "null" if client is None else f'"{client}"'
            lines.append(
                f'{{"logger":"{ACCESS_LOGGER}","level":"info","method":"{method}",'
                f'"route":{route_json},"status":{status},"duration_ms":{_milliseconds(elapsed)},'
                f'"client":{client_json},"request_id":"{rid}","timestamp":"{_timestamp(now)}",'
                f'"message":"{message}"}}\n'
            )
        return "".join(lines)

    def _route_json(self, route: str) -> str:
        """A route's template as JSON, kept: an app has a few of them."""
        text = _orjson_text(route)
        if len(self._routes) < 1024:
            self._routes[route] = text
        return text


def _address(client: tuple[str, int] | None) -> str | None:
    """The client as host:port; a proxy's header may have set it, so it is escaped too."""
    return f"{client[0]}:{client[1]}" if client else None


def _milliseconds(ns: int) -> str:
    """A duration in milliseconds to two decimals, as text."""
    hundredths = (ns + 5_000) // 10_000
    return f"{hundredths // 100}.{_TWO_DIGITS[hundredths % 100]}"


_TWO_DIGITS = [f"{n:02d}" for n in range(100)]


_second: tuple[int, str] = (0, "")


def _timestamp(ns: int) -> str:
    """UTC at `ns` (by time.time_ns) in ISO 8601 with microseconds and Z; the seconds' text
    is kept while they last."""
    global _second
    second, micros = divmod(ns // 1000, 1_000_000)
    if second != _second[0]:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (second, text)
    return f"{_second[1]}.{micros:06d}Z"


# No access lines until configure_logging (as the stdlib's default WARNING would have it).
_access = AccessLog("WARNING", "json", sys.stderr)


def flush_access() -> None:
    """Write the access lines still waiting for the end of this turn of the event loop."""
    _access.flush()


atexit.register(flush_access)  # the process may end before that turn does


class InOrderStreamHandler(logging.StreamHandler):
    """stderr for every other record, after the access lines waiting for their batch, so
    that lines stay in the order they happened."""

    def emit(self, record: logging.LogRecord) -> None:
        flush_access()
        super().emit(record)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's or proxy's X-Request-ID if it is short and safe to log, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if VALID_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    return f"{_id_prefix}{next(_id_counter):016x}"


def _new_id_prefix() -> None:
    """New IDs: 32 hex digits, a random half drawn per process (again in a forked child)
    and a counter: unique like uuid4's, without its system call per request."""
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = uuid.uuid4().hex[:16], itertools.count()


_id_prefix, _id_counter = "", itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def log_access(scope: Scope, status: int, started_ns: int, rid: str) -> None:
    """The request's access line, if LOG_LEVEL lets INFO through; `started_ns` is when the
    request came in, by `time.perf_counter_ns()`."""
    if _access.enabled:
        _access.write(scope, status, started_ns, rid)


def configure_logging(settings: Settings) -> None:
    """The access line, the root logger and uvicorn's (which propagate to it): LOG_FORMAT
    at LOG_LEVEL, to the stderr of now."""
    global _access
    flush_access()
    _access = AccessLog(settings.log_level, settings.log_format, sys.stderr)
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),  # `extra=` and the filter's request_id
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.add_log_level,
        ],
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *(
                [structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info]
                if settings.log_format == "json"
                else []
            ),
            *_rendering(settings.log_format),
        ],
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": f"{__name__}.InOrderStreamHandler",
                    "formatter": "default",
                    "filters": ["request_id"],
                }
            },
            "root": {"level": settings.log_level, "handlers": ["stderr"]},
            "loggers": {
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                # The app writes its own access line (with the request ID); uvicorn's would be a
                # second one per request, however `uvicorn src.main:app` was started.
                "uvicorn.access": {"handlers": [], "propagate": False},
            },
        }
    )

"""Request IDs and structured logs: follow one request from the access line to its errors.

`RequestContext` (pure ASGI, outermost) takes a well-formed `X-Request-ID` or makes one,
returns it on every response (errors and 503s included), and writes one access line per
request. Every log record made while the request runs carries its `request_id`.
`configure_logging(settings)`: JSON lines (python-json-logger) or text, at LOG_LEVEL.
"""

import logging
import logging.config
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.config import Settings

REQUEST_ID_HEADER = b"x-request-id"
# What we accept from a client or a proxy: short, and safe to put in a log line.
VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("src.access")


class RequestIdFilter(logging.Filter):
    """Adds the current request's ID (or "-") to every record; drops terminal colours."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        return True


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        rid = given.decode() if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER, rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                client = scope.get("client")
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "route": getattr(route, "path", None),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                    },
                )
            request_id.reset(token)


def configure_logging(settings: Settings) -> None:
    """The root logger (and uvicorn's, which propagate to it) in LOG_FORMAT at LOG_LEVEL."""
    json_format = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"
    text_format = "%(asctime)s %(levelname)-5s [%(request_id)s] %(name)s: %(message)s"
    formatter = (
        {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": json_format}
        if settings.log_format == "json"
        else {"format": text_format}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "filters": ["request_id"],
                }
            },
            "root": {"level": settings.log_level, "handlers": ["stderr"]},
            "loggers": {
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
        }
    )

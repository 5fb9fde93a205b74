"""Graceful drain on SIGTERM (docs/production.md): `/ready` and every new request answer
503 at once, requests in flight finish with `Connection: close`, and no connection is
closed under a request that is on its way; DRAIN_TIMEOUT_SECONDS bounds it all."""

import signal
from types import FrameType

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from src.errors import error_response

# A new connection reaches another replica (this one left the load balancer): retry soon.
DRAIN_RETRY_AFTER_SECONDS = "1"


class Drain:
    """The process's draining flag: set once, by the shutdown signal; read per request."""

    def __init__(self) -> None:
        self.draining = False

    def begin(self) -> None:
        self.draining = True


async def refuse_while_draining(
    scope: Scope, receive: Receive, send: Send, max_body_bytes: int
) -> None:
    """503 + Retry-After + `Connection: close` for a request that arrives while draining, its
    bounded body read first: closing on unread input would reset the client's connection."""
    read = 0
    while read <= max_body_bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    refusal = error_response(
        503,
        "server shutting down: retry on a new connection",
        headers={"Retry-After": DRAIN_RETRY_AFTER_SECONDS, "Connection": "close"},
    )
    await refusal(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which raises the drain flag in its signal handler (before its main
    loop notices `should_exit`, up to 0.1 s later) and exits 0 once drained."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.begin()
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises a captured signal once served, which ends the process with
            # 143: SIGTERM is how an orchestrator stops us, and a finished drain is success.
            self._captured_signals.remove(sig)


class KeepIdleOpenOnShutdown(HttpToolsProtocol):
    """uvicorn's `shutdown()` (its non-public hook, called per connection by Server.shutdown)
    closes idle keep-alive connections at once: a request already sent on one then meets a
    reset. Here they stay open until their own keep-alive or read timer closes them, and what
    arrives meanwhile gets the drain's 503 (src/edge.py); in-flight requests get
    `Connection: close` as before.
    """

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()

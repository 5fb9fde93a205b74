"""A Kubernetes Service with readiness probes, emulated for the rolling rehearsal: an HTTP
proxy that sends each request to one of the backends whose last probes passed.

Each backend is probed (`GET ready_path`, no keep-alive) every period, as a kubelet does;
a change of readiness, and a backend's deletion, reach the routing only after the
endpoint lag. Requests with no routed backend get a 503 here, counted as `no_backend`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

import httpx

from alembic_pg_guard._rehearse.timings import Timings

# Headers of one connection, not of the request: never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host",
     "transfer-encoding", "content-length"}
)  # fmt: skip
UPSTREAM_TIMEOUT = 30.0
T = TypeVar("T")
MAX_HEAD_BYTES = 64 * 1024


@dataclass
class Backend:
    name: str
    url: str
    client: httpx.AsyncClient
    ready: bool = False  # the last probes' verdict (the pod's Ready condition)
    routed: bool = False  # in the Service's endpoints: the verdict after the lag
    deleted: bool = False  # removed from the endpoints for good
    failures: int = 0  # consecutive failed probes
    successes: int = 0  # consecutive passed probes
    answer: str = "no probe yet"  # the last probe's answer, for messages
    requests: int = 0
    tasks: list[asyncio.Task] = field(default_factory=list)


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    close: bool


class Router:
    """The proxy on a loopback port, on its own event loop thread; use it as a context
    manager. add/remove/ready/routed may be called from any thread."""

    def __init__(self, ready_path: str, timings: Timings) -> None:
        self.ready_path = ready_path
        self.timings = timings
        self.backends: dict[str, Backend] = {}
        self.events: list[tuple[float, str]] = []
        self.history: list[tuple[float, bool]] = []  # (when, some backend is routed)
        self.no_backend = 0
        self.upstream_errors: Counter[str] = Counter()  # "backend: exception" → count
        self.url = ""
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="router", daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()

    def __enter__(self) -> Router:
        self._thread.start()
        self.url = self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # --- the control side ----------------------------------------------------------

    def add(self, name: str, url: str) -> None:
        """A new backend: probed from now on, routed once a probe passed and the lag ran."""
        self._call(self._add(name, url))

    def remove(self, name: str) -> None:
        """The backend's deletion: out of the routing after the lag, whatever its probes."""
        self._loop.call_soon_threadsafe(self._delete, name)

    def ready(self, name: str) -> bool:
        return self.backends[name].ready

    def routed(self, name: str) -> bool:
        return self.backends[name].routed

    def answer(self, name: str) -> str:
        """What the backend's last readiness probe got."""
        return self.backends[name].answer

    def requests_to(self, name: str) -> int:
        return self.backends[name].requests

    def empty_seconds(self, start: float, end: float) -> float:
        """Seconds between `start` and `end` with no backend routed."""
        empty, state, since = 0.0, False, start
        for when, routed in [*self.history, (end, True)]:
            when = min(max(when, start), end)
            if not state:
                empty += when - since
            state, since = routed, when
        return empty

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    # --- the event loop side -------------------------------------------------------

    async def _listen(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        port = self._server.sockets[0].getsockname()[1]
        self.history.append((time.monotonic(), False))
        return f"http://127.0.0.1:{port}"

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [*self._clients, *(t for b in self.backends.values() for t in b.tasks)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for backend in self.backends.values():
            await backend.client.aclose()

    async def _add(self, name: str, url: str) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
        client = httpx.AsyncClient(base_url=url, timeout=UPSTREAM_TIMEOUT, limits=limits)
        backend = Backend(name, url, client)
        self.backends[name] = backend
        backend.tasks.append(asyncio.create_task(self._probe(backend)))
        self._note(f"{name} started")

    def _delete(self, name: str) -> None:
        self._note(f"{name} deleted")
        self._loop.call_later(self.timings.endpoint_lag, self._route, self.backends[name], None)

    def _route(self, backend: Backend, ready: bool | None) -> None:
        """Apply a readiness verdict (None: the deletion) to the routing, lag elapsed."""
        before = any(b.routed for b in self.backends.values())
        if ready is None:
            backend.deleted = True
        routed = bool(ready) and not backend.deleted
        if routed != backend.routed:
            backend.routed = routed
            self._note(f"{backend.name} {'in' if routed else 'out of'} the routing")
        after = any(b.routed for b in self.backends.values())
        if after != before:
            self.history.append((time.monotonic(), after))

    async def _probe(self, backend: Backend) -> None:
        t = self.timings
        limits = httpx.Limits(max_keepalive_connections=0)  # a kubelet's probes: no keep-alive
        async with httpx.AsyncClient(timeout=t.probe_timeout, limits=limits) as probe:
            due = time.monotonic()
            while True:
                try:
                    answer = await probe.get(backend.url + self.ready_path)
                    passed = 200 <= answer.status_code < 400
                    backend.answer = f"{answer.status_code} {answer.text[:300]}"
                except httpx.HTTPError as exc:
                    passed = False
                    backend.answer = type(exc).__name__
                backend.failures = 0 if passed else backend.failures + 1
                backend.successes = backend.successes + 1 if passed else 0
                if backend.ready:
                    ready = backend.failures < t.failure_threshold
                else:
                    ready = backend.successes >= t.success_threshold
                if ready != backend.ready:
                    backend.ready = ready
                    self._note(f"{backend.name} probe: {'ready' if ready else 'not ready'}")
                    self._loop.call_later(t.endpoint_lag, self._route, backend, ready)
                due += t.probe_period
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    def _pick(self) -> Backend | None:
        routed = [b for b in self.backends.values() if b.routed]
        return routed[next(self._turn) % len(routed)] if routed else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while (request := await read_request(reader)) is not None:
                status, headers, body = await self._forward(request)
                writer.write(render(status, headers, body))
                await writer.drain()
                if request.close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ValueError:  # a request this proxy cannot parse
            writer.write(render(400, [], b""))
        finally:
            writer.close()
            self._clients.discard(task)

    async def _forward(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        backend = self._pick()
        if backend is None:
            self.no_backend += 1
            return 503, [("retry-after", "1")], b"no ready backend"
        backend.requests += 1
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        try:
            sent = backend.client.build_request(
                request.method, request.target, headers=headers, content=request.body
            )
            answer = await backend.client.send(sent, stream=True)
            try:
                body = b"".join([chunk async for chunk in answer.aiter_raw()])
            finally:
                await answer.aclose()
        except httpx.HTTPError as exc:
            self.upstream_errors[f"{backend.name}: {type(exc).__name__}"] += 1
            return 502, [], f"{backend.name}: {type(exc).__name__}".encode()
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers.raw]
        return answer.status_code, [(k, v) for k, v in kept if k.lower() not in HOP_BY_HOP], body


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next HTTP/1.1 request on a client connection; None once the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ValueError("truncated request head") from None
        return None
    first, *lines = head.decode("latin-1").split("\r\n")
    method, target, version = first.split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines if ln)]
    named = {k.lower(): v for k, v in headers}
    if "chunked" in named.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(named.get("content-length", "0")))
    connection = named.get("connection", "").lower()
    close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    return Request(method, target, headers, body, close)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
        pass
    return bytes(body)


def render(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if status not in (204, 304):  # which carry no body, nor its length
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

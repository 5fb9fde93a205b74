"""Each process's cache of serialized GET responses, flushed by PostgreSQL's NOTIFY at the
commit of any write to a @cached table (src/kit/triggers.py). Bypassed while not
subscribed; a read that raced a write never stores; writes flush first (docs/cache.md)."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from fastapi import Request, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from src.config import Settings
from src.kit import responses, triggers
from src.tls import asyncpg_ssl

logger = logging.getLogger(__name__)

# The listener's application_name, so operators (and the tests) can find its backend.
LISTENER_NAME = "api-cache-listener"
# A ping this often notices a connection lost without a FIN (a network partition).
PING_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = (0.1, 5.0)  # first and longest wait between reconnects

State = Literal["subscribed", "not subscribed", "off"]
Key = tuple[str, bytes]  # path, raw query string
IF_NONE_MATCH = b"if-none-match"
# Bytes of CPython objects around an entry's data, and per header it does not share (upper
# bounds); a shared header costs its list slot.
ENTRY_OVERHEAD = 600
HEADER_OVERHEAD = 150
SLOT = 8
# Header fields alike in every entry: one object for all (fewer small objects to keep).
SHARED_FIELDS = frozenset({b"content-type", b"cache-control"})
_shared: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
# CPython's small-object allocator (pymalloc, requests up to 512 bytes) keeps an arena while
# any object in it lives, so what evicted small objects free stays with the process for
# small objects only. Capping them at 15% of the budget bounds the RSS the cache can leave
# behind to ~1.15x CACHE_MAX_MB, whatever mix of small and large bodies came and went.
SMALL_OBJECT_MAX = 512
SMALL_SHARE = 0.15


def _sharing(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [_shared.setdefault(h, h) if h[0] in SHARED_FIELDS else h for h in headers]


@dataclass(frozen=True, slots=True)
class Cached:
    """A 200's body, and the headers of its 200 and 304 as the route's Response builds them."""

    body: bytes
    etag: str
    ok_headers: list[tuple[bytes, bytes]]
    not_modified_headers: list[tuple[bytes, bytes]]
    route: BaseRoute | None  # what the access line names when CacheHits answers

    @classmethod
    def of(cls, content: Any, route: BaseRoute | None) -> "Cached":
        body, etag = responses.serialize(content)
        # orjson's bytes keep their whole write buffer (4 KiB at least): keep an exact copy.
        body = memoryview(body).tobytes()
        ok = _sharing(responses.ok(body, etag).raw_headers)
        mine = {h: h for h in ok}  # the 304's ETag field is the 200's object
        not_modified = [mine.get(h, h) for h in _sharing(responses.not_modified(etag).raw_headers)]
        return cls(body, etag, ok, not_modified, route)

    def size(self, key: Key) -> tuple[int, int]:
        """What the entry and its key hold in memory, objects included (upper bounds): in all,
        and in small objects (a body over SMALL_OBJECT_MAX bytes is not one)."""
        listed = [*self.ok_headers, *self.not_modified_headers]
        own = {id(h): h for h in listed if h[0] not in SHARED_FIELDS}.values()
        headers = sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in own) + SLOT * len(listed)
        small = len(key[0]) + len(key[1]) + len(self.etag) + headers + ENTRY_OVERHEAD
        body = len(self.body)
        return body + small, small + (body if body <= SMALL_OBJECT_MAX else 0)


class ResponseCache:
    """Serialized responses by key, served only while the listener is subscribed."""

    def __init__(
        self,
        max_bytes: int,
        connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        off_reason: str | None = None,
        tables: frozenset[str] = frozenset(),
    ) -> None:
        self._connect = connect
        self.tables = tables  # what the cached reads come from: each needs its trigger
        self._entries: dict[Key, Cached] = {}
        self._bytes = 0
        self._small_bytes = 0  # the part of _bytes in small objects
        self._max_bytes = max_bytes
        self._max_small_bytes = int(max_bytes * SMALL_SHARE)
        self.generation = 0
        self.off_reason = off_reason
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """What the kept entries hold, as counted against CACHE_MAX_MB."""
        return self._bytes

    @property
    def held_small_bytes(self) -> int:
        """The part of held_bytes in small objects, counted against SMALL_SHARE of it."""
        return self._small_bytes

    @property
    def subscribed(self) -> bool:
        # is_closed() turns true when the socket closes, before asyncpg's callbacks run.
        return self._listener is not None and not self._listener.is_closed()

    @property
    def state(self) -> State:
        if self.off_reason is not None:
            return "off"
        return "subscribed" if self.subscribed else "not subscribed"

    def get(self, key: Key) -> Cached | None:
        """The entry, now the most recently used (eviction takes the least recently used)."""
        if not self.subscribed or (entry := self._entries.pop(key, None)) is None:
            return None
        self._entries[key] = entry
        return entry

    def ticket(self) -> int | None:
        """Taken before a read: the generation it may store under (None: it may not)."""
        return self.generation if self.subscribed else None

    def put(self, key: Key, ticket: int | None, entry: Cached) -> None:
        if ticket is None or ticket != self.generation or not self.subscribed:
            return
        size, small = entry.size(key)
        if size > self._max_bytes or small > self._max_small_bytes:
            return
        if (old := self._entries.pop(key, None)) is not None:
            self._forget(key, old)
        while (  # the least recently used go first
            self._bytes + size > self._max_bytes
            or self._small_bytes + small > self._max_small_bytes
        ):
            oldest = next(iter(self._entries))
            self._forget(oldest, self._entries.pop(oldest))
        self._entries[key] = entry
        self._bytes += size
        self._small_bytes += small

    def _forget(self, key: Key, entry: Cached) -> None:
        size, small = entry.size(key)
        self._bytes -= size
        self._small_bytes -= small

    def invalidate(self, *_: object) -> None:
        """Flush everything; reads in flight may no longer store (their ticket is old)."""
        self.generation += 1
        self._entries.clear()
        self._bytes = self._small_bytes = 0

    def _subscribed(self, conn: asyncpg.Connection | None) -> None:
        self.invalidate()
        self._listener = conn

    def start(self) -> None:
        """Start listening (in the app's lifespan: it needs the running loop)."""
        if self.off_reason is None and self._connect is not None:
            self._task = asyncio.create_task(self._listen(self._connect), name=LISTENER_NAME)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._subscribed(None)

    async def _listen(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        """Subscribe, and subscribe again after any loss, forever (with a growing wait)."""
        delay = RETRY_SECONDS[0]
        while True:
            conn = None
            try:
                conn = await connect()
                problem = await pooler_problem(conn) or await triggers.problem(conn, self.tables)
                if problem is not None:
                    self.off_reason = problem
                    logger.error("response cache off: %s", problem)
                    return
                await self._subscribe(conn)
                logger.warning("response cache bypassed: its LISTEN connection was closed")
            except Exception as exc:
                reason = " ".join([type(exc).__name__, *str(exc).splitlines()[:1]])
                logger.warning("response cache bypassed: LISTEN failed (%s); retrying", reason)
            finally:
                if conn is not None and self._listener is conn:
                    delay = RETRY_SECONDS[0]  # it was subscribed: retry soon
                self._subscribed(None)
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_SECONDS[1])

    async def _subscribe(self, conn: asyncpg.Connection) -> None:
        """LISTEN, then let reads use the cache until the connection is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        await conn.add_listener(triggers.CACHE_TRIGGERS.channel, self.invalidate)
        self._subscribed(conn)
        logger.info("response cache on: listening on %s", triggers.CACHE_TRIGGERS.channel)
        while not conn.is_closed():
            try:
                await asyncio.wait_for(lost.wait(), PING_SECONDS)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=PING_SECONDS)


async def pooler_problem(conn: asyncpg.Connection) -> str | None:
    """LISTEN through a pooler may never hear a NOTIFY: the backend that LISTENs is not
    ours. A pooler answers with its own BackendKeyData, unlike PostgreSQL."""
    if conn.get_server_pid() == await conn.fetchval("SELECT pg_backend_pid()"):
        return None
    return (
        "its LISTEN connection goes through a connection pooler (PgBouncer?), where "
        "notifications are lost; set CACHE_LISTEN_DATABASE_URL to PostgreSQL itself"
    )


def response_cache(settings: Settings, tables: frozenset[str]) -> ResponseCache:
    """The app's cache of reads of `tables`, off if the settings say so (and why, logged
    once), or when one of them lacks its trigger (said when it connects); `start()` it."""
    max_bytes = settings.cache_max_mb * 1024 * 1024
    if not settings.cache_enabled:
        return ResponseCache(max_bytes, off_reason="CACHE_ENABLED=false")
    if settings.db_transaction_pooler and not settings.cache_listen_database_url:
        reason = (
            "DB_TRANSACTION_POOLER=true and LISTEN does not work through a transaction "
            "pooler; set CACHE_LISTEN_DATABASE_URL to PostgreSQL itself to keep the cache"
        )
        logger.warning("response cache off: %s", reason)
        return ResponseCache(max_bytes, off_reason=reason)
    url = settings.cache_listen_url
    ssl = asyncpg_ssl(settings.cache_listen_tls)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": LISTENER_NAME},
            **({"ssl": ssl} if ssl is not None else {}),
        )

    return ResponseCache(max_bytes, connect, tables=tables)


def of(request: Request) -> ResponseCache:
    return request.app.state.cache


async def cached_json(request: Request, load: Callable[[], Awaitable[Any]]) -> Response:
    """`load()`'s content as this GET's response, kept (if no invalidation happened
    meanwhile) for `CacheHits` to answer the next one. A 404 from `load` is not kept."""
    cache = of(request)
    ticket = cache.ticket()
    content = await load()
    if ticket is None:  # not subscribed: nothing may be kept
        return responses.json_with_etag(request, content)
    entry = Cached.of(content, request.scope.get("route"))
    cache.put((request.scope["path"], request.scope["query_string"]), ticket, entry)
    return responses.respond(request, entry.body, entry.etag)


class CacheHits:
    """Pure ASGI, innermost: a GET the cache holds is answered before FastAPI routes,
    validates or builds a Response, with the status, headers and bytes the route gave."""

    def __init__(self, app: ASGIApp, cache: ResponseCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            entry = self.cache.get((scope["path"], scope["query_string"]))
            if entry is not None:
                scope["route"] = entry.route
                header = (v.decode("latin-1") for k, v in scope["headers"] if k == IF_NONE_MATCH)
                if responses.matches(next(header, None), entry.etag):
                    status, headers, body = 304, entry.not_modified_headers, b""
                else:
                    status, headers, body = 200, entry.ok_headers, entry.body
                await send({"type": "http.response.start", "status": status, "headers": [*headers]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

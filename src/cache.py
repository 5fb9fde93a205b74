"""Each process's cache of serialized /country responses, invalidated by PostgreSQL itself.

Statement-level triggers on country and subdivision NOTIFY `country_api_changed` at the
commit of every write, whoever makes it (the API, another replica, psql, a migration).
Each process keeps one LISTEN connection, outside the pool and the gate, and flushes
everything on each notification. Three rules keep reads correct (docs/cache.md):
- not subscribed (startup, listener lost, the database restarting): bypass the cache;
  subscribing again flushes it;
- a read stores its result only if nothing was invalidated since it started (a generation
  counter), so a read that raced a write never stores the old version;
- a write flushes its own process's cache before it answers.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from fastapi import Request, Response

from src.config import Settings
from src.responses import respond, serialize
from src.tls import asyncpg_ssl

logger = logging.getLogger(__name__)

# The revision that adds the triggers names the same channel.
CHANNEL = "country_api_changed"
# The listener's application_name, so operators (and the tests) can find its backend.
LISTENER_NAME = "country-api-cache-listener"
# A ping this often notices a connection lost without a FIN (a network partition).
PING_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = (0.1, 5.0)  # first and longest wait between reconnects

State = Literal["subscribed", "not subscribed", "off"]


@dataclass(frozen=True, slots=True)
class Cached:
    body: bytes
    etag: str


class ResponseCache:
    """Serialized responses by key, served only while the listener is subscribed."""

    def __init__(self, max_bytes: int, off_reason: str | None = None) -> None:
        self._entries: dict[Hashable, Cached] = {}
        self._bytes = 0
        self._max_bytes = max_bytes
        self.generation = 0
        self.off_reason = off_reason
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None

    @property
    def subscribed(self) -> bool:
        # is_closed() turns true as soon as the socket closes, before asyncpg's own
        # termination callbacks run: no request is served from the cache in between.
        return self._listener is not None and not self._listener.is_closed()

    @property
    def state(self) -> State:
        if self.off_reason is not None:
            return "off"
        return "subscribed" if self.subscribed else "not subscribed"

    def get(self, key: Hashable) -> Cached | None:
        return self._entries.get(key) if self.subscribed else None

    def ticket(self) -> int | None:
        """Taken before a read: the generation it may store under (None: it may not)."""
        return self.generation if self.subscribed else None

    def put(self, key: Hashable, ticket: int | None, entry: Cached) -> None:
        if ticket is None or ticket != self.generation or not self.subscribed:
            return
        size = len(entry.body)
        if size > self._max_bytes:
            return
        if (old := self._entries.pop(key, None)) is not None:
            self._bytes -= len(old.body)
        while self._bytes + size > self._max_bytes:  # the oldest entries go first
            self._bytes -= len(self._entries.pop(next(iter(self._entries))).body)
        self._entries[key] = entry
        self._bytes += size

    def invalidate(self, *_: object) -> None:
        """Flush everything; reads in flight may no longer store (their ticket is old)."""
        self.generation += 1
        self._entries.clear()
        self._bytes = 0

    def _subscribed(self, conn: asyncpg.Connection | None) -> None:
        self.invalidate()
        self._listener = conn

    # --- the listener ---------------------------------------------------------------

    def start(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        if self.off_reason is None:
            self._task = asyncio.create_task(self._listen(connect), name=LISTENER_NAME)

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
                if (problem := await pooler_problem(conn)) is not None:
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
        await conn.add_listener(CHANNEL, self.invalidate)
        self._subscribed(conn)
        logger.info("response cache on: listening on %s", CHANNEL)
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


def response_cache(settings: Settings) -> ResponseCache:
    """The app's cache, listening unless it is off (and why, logged once)."""
    max_bytes = settings.cache_max_mb * 1024 * 1024
    if not settings.cache_enabled:
        return ResponseCache(max_bytes, "CACHE_ENABLED=false")
    if settings.db_transaction_pooler and not settings.cache_listen_database_url:
        reason = (
            "DB_TRANSACTION_POOLER=true and LISTEN does not work through a transaction "
            "pooler; set CACHE_LISTEN_DATABASE_URL to PostgreSQL itself to keep the cache"
        )
        logger.warning("response cache off: %s", reason)
        return ResponseCache(max_bytes, reason)
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

    cache = ResponseCache(max_bytes)
    cache.start(connect)
    return cache


def of(request: Request) -> ResponseCache:
    return request.app.state.cache


async def cached_json(
    request: Request, key: Hashable, load: Callable[[], Awaitable[Any]]
) -> Response:
    """The cached body for `key`, else `load()`'s content serialized (and kept, if no
    invalidation happened meanwhile). An exception from `load` (a 404) is not kept."""
    cache = of(request)
    entry = cache.get(key)
    if entry is None:
        ticket = cache.ticket()
        entry = Cached(*serialize(await load()))
        cache.put(key, ticket, entry)
    return respond(request, entry.body, entry.etag)

"""The app's one connection pool, owned by the FastAPI lifespan, and two views of it.

- `create_engine()`: the pool. Its connections rest in **autocommit**, which is what
  reads use: a single SELECT is atomic and sees one snapshot on its own, so wrapping it
  in BEGIN … ROLLBACK would only add two round trips per request. It also makes the
  pre-ping on checkout one `;` instead of BEGIN/`;`/ROLLBACK.
- `transactional(engine)`: the same pool in READ COMMITTED transactions (PostgreSQL's
  default), for writes. A connection that goes back to the pool with a transaction still
  open (an error, an early return) is rolled back first.

Routes hand their database work to `read(request, work)` or `write(request, work)`:
`work(conn)` is a plain function of SQLAlchemy's (sync) Connection API, run in a single
hop into SQLAlchemy's greenlet, the way `AsyncSession.run_sync()` runs ORM code. SQLAlchemy's
asyncio API is that same sync core behind a greenlet bridge, crossed once per awaited call:
`async with engine.connect()` + `await conn.execute()` cross it three times per request
(checkout, execute, return), ~12% of a GET's CPU here (`python -m bench.inprocess`). It
is not blocking: every driver call inside still awaits asyncpg on the event loop (keep
anything else that could block out of `work`, as in any async code). Nor is
it a FastAPI dependency that yields a connection: that machinery (exit stack, shielded
exit, a cancel scope) cost more than the whole checkout, and the connection goes back to
the pool before the response is built instead of after it is sent. Requests queue for a
connection in a `ConnectionGate` in front of the pool.
"""

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn  # what AsyncConnection.run_sync() is built on

from src.config import Settings

POOL_TIMEOUT_SECONDS = 10


class ConnectionGate:
    """Lets requests take pooled connections in the order they asked for them.

    SQLAlchemy's asyncio pool hands a returned connection to whoever asks next, so a
    request arriving at that moment overtakes those already waiting; under sustained load
    a few of them starve (seconds, at 64 concurrent requests on a 20-connection pool). A
    FIFO semaphore no larger than the pool, in front of it, makes waiting fair: the pool
    never waits. Waiting longer than `timeout` raises TimeoutError (503), like the pool's
    own timeout would.
    """

    def __init__(self, size: int, timeout: float = POOL_TIMEOUT_SECONDS) -> None:
        self._slots = asyncio.Semaphore(size)
        self.timeout = timeout

    async def __aenter__(self) -> None:
        if self._slots.locked():
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # free: no suspension

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()


def create_engine(settings: Settings) -> AsyncEngine:
    """The pool, in autocommit: read through this engine, write through `transactional()`."""
    engine = create_async_engine(
        settings.async_url,
        isolation_level="AUTOCOMMIT",
        # After a database restart, stale pooled connections are replaced
        # transparently instead of failing the next request: by a ping (a round trip)
        # or, without it, by `_replace_if_closed` (none).
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # Fail fast (then 503) rather than hang when the database is unreachable.
        connect_args={"timeout": 5, "command_timeout": 30},
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection, connection_record, connection_proxy) -> None:
    """A connection the server closed (restart, crash, pg_terminate_backend, idle timeout)
    is already known to asyncpg as closed, since the event loop reads its socket all the
    time; the pool replaces it before use, no round trip needed."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


def transactional(engine: AsyncEngine) -> AsyncEngine:
    """The same pool with real transactions: commit() or nothing is kept."""
    return engine.execution_options(isolation_level="READ COMMITTED")


def create_gate(settings: Settings) -> ConnectionGate:
    """One connection fewer than the pool holds: kept for the `/ready` probe, which does
    not queue here, so a loaded app still answers its readiness probe."""
    return ConnectionGate(max(settings.db_pool_size + settings.db_max_overflow - 1, 1))


T = TypeVar("T")


def _connected(engine: Engine, work: Callable[[Connection], T], transaction: bool) -> T:
    with engine.begin() if transaction else engine.connect() as conn:
        return work(conn)


async def run(engine: AsyncEngine, work: Callable[[Connection], T], *, transaction: bool) -> T:
    """`work(conn)` on a pooled connection, in one hop into SQLAlchemy's greenlet; with
    `transaction`, committed when `work` returns and rolled back if it raises."""
    return await greenlet_spawn(_connected, engine.sync_engine, work, transaction)


async def read(request: Request, work: Callable[[Connection], T]) -> T:
    """`work(conn)` for Core reads, on an autocommit connection: no transaction, no ORM
    unit of work."""
    state = request.app.state
    async with state.gate:
        return await run(state.read_engine, work, transaction=False)


async def write(request: Request, work: Callable[[Connection], T]) -> T:
    """`work(conn)` in one READ COMMITTED transaction: committed when it returns, rolled
    back if it raises (the exception, an IntegrityError say, then reaches the caller)."""
    state = request.app.state
    async with state.gate:
        return await run(state.engine, work, transaction=True)

"""The app's one connection pool. Reads and writes run `await work(...)` on a pooled
connection's driver (src/reads.py: no SQLAlchemy execution layer, no greenlet hop): reads
outside a transaction, writes in one READ COMMITTED transaction. /ready's probe runs sync
SQLAlchemy by `run_sync()` (the guard's API). A fair ConnectionGate queues requests."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from typing import TypeVar

import asyncpg
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from src.config import Settings
from src.reads import Reads, SqlSpan, Writes
from src.tls import asyncpg_ssl

POOL_TIMEOUT_SECONDS = 10
COMMAND_TIMEOUT_SECONDS = 30
POOL_CLOSE_TIMEOUT_SECONDS = 2  # as SQLAlchemy's own graceful close of an invalidated one
# Set on each new connection: they win over the role's and the database's settings.
SESSION_SETTINGS = {
    "search_path": "public",  # the tables' unqualified names
    "statement_timeout": f"{COMMAND_TIMEOUT_SECONDS}s",  # asyncpg's bound, enforced by the server
    "lock_timeout": "0",  # lock waits end with the statement
    "idle_in_transaction_session_timeout": f"{COMMAND_TIMEOUT_SECONDS}s",
    "default_transaction_read_only": "off",
    "default_transaction_isolation": "read committed",
}
T = TypeVar("T")
Work = Callable[[Connection], T]
R = TypeVar("R", bound=Reads)
ReadWork = Callable[[Reads], Awaitable[T]]
WriteWork = Callable[[Writes], Awaitable[T]]
READ_COMMITTED = {"isolation": "read_committed"}
Connect = Callable[[], AsyncContextManager[AsyncConnection]]


class ConnectionGate:
    """Pooled connections in the order requests asked (the pool alone lets a few starve
    under load); waiting past `timeout` raises TimeoutError (503), as the pool would."""

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


def _replace_if_closed(dbapi_connection, connection_record, connection_proxy) -> None:
    """A connection the server closed (restart, pg_terminate_backend, idle timeout) is
    already known to asyncpg as closed: the pool replaces it before use, no round trip."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


async def _run(connect: Connect, work: Work[T]) -> T:
    """`work(conn)`, run once more if a statement was stale (asyncpg's
    InvalidCachedStatementError: a migration retyped a column since it was prepared);
    SQLAlchemy has dropped its statements."""
    try:
        async with connect() as conn:
            return await conn.run_sync(work)
    except DBAPIError as exc:
        if not isinstance(exc.orig and exc.orig.__cause__, asyncpg.InvalidCachedStatementError):
            raise
    async with connect() as conn:  # its statements are prepared afresh
        return await conn.run_sync(work)


def _pin_settings(dbapi_connection, connection_record) -> None:
    """The session settings the app relies on, on each new connection, so that role-level
    ones (a role may ALTER ROLE itself ... SET) cannot change them. A query, not startup
    parameters: PgBouncer refuses startup parameters it does not know. One simple-protocol
    round trip, before anything else runs under the role's own statement_timeout."""
    sql = "SELECT " + ", ".join(
        f"set_config('{k}', '{v}', false)" for k, v in SESSION_SETTINGS.items()
    )
    dbapi_connection.run_async(lambda conn: conn.execute(sql))


def connect_args(settings: Settings) -> dict[str, object]:
    """asyncpg's arguments: fail fast (503) rather than hang; TLS when configured; behind
    a transaction pooler, no prepared-statement caches (docs/production.md)."""
    args: dict[str, object] = {"timeout": 5, "command_timeout": COMMAND_TIMEOUT_SECONDS}
    if (ssl := asyncpg_ssl(settings.app_tls)) is not None:
        args["ssl"] = ssl
    if settings.db_transaction_pooler:
        args |= {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": str,  # "": the unnamed statement
        }
    return args


class Database:
    """The pool and the gate in front of it; `dispose()` closes every connection."""

    def __init__(self, settings: Settings) -> None:
        self.autocommit: AsyncEngine = create_async_engine(
            settings.app_async_url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=settings.db_pool_pre_ping,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=POOL_TIMEOUT_SECONDS,
            connect_args=connect_args(settings),
        )
        event.listen(self.autocommit.sync_engine, "checkout", _replace_if_closed)
        if not settings.db_transaction_pooler:  # there a SET would reach other clients
            # First: SQLAlchemy's own connect work (the dialect's first queries) must not run
            # under role-level settings such as a tiny statement_timeout.
            event.listen(self.autocommit.sync_engine, "connect", _pin_settings, insert=True)
        self.transactional = self.autocommit.execution_options(isolation_level="READ COMMITTED")
        self.pooled = settings.db_transaction_pooler
        self.sql_span: SqlSpan | None = None  # set when traced (src/telemetry.py)
        # One connection fewer than the pool holds: kept for `probe()` (the /ready check),
        # which does not queue here, so a loaded app still answers its readiness probe.
        self.gate = ConnectionGate(max(settings.db_pool_size + settings.db_max_overflow - 1, 1))

    def _reading(self) -> AsyncContextManager[AsyncConnection]:
        """An autocommit connection; behind a transaction pooler a transaction instead: it
        keeps one server connection from asyncpg's Parse to its Execute."""
        return self.transactional.begin() if self.pooled else self.autocommit.connect()

    async def read(self, work: ReadWork[T]) -> T:
        """`await work(reads)` on a pooled connection, outside a transaction (asyncpg itself
        prepares again a statement a migration made stale)."""
        async with self.gate:
            return await self._on_driver(work, Reads, {"readonly": True} if self.pooled else None)

    async def write(self, work: WriteWork[T]) -> T:
        """`await work(writes)` in one READ COMMITTED transaction: committed when it returns,
        rolled back if it raises (the exception, asyncpg's UniqueViolationError say, then
        reaches the caller). Run once more from its start if a statement was stale (a
        migration retyped a column since it was prepared): that error ends the transaction
        before any commit, and asyncpg has dropped the statement."""
        async with self.gate:
            try:
                return await self._on_driver(work, Writes, READ_COMMITTED)
            except asyncpg.InvalidCachedStatementError:
                return await self._on_driver(work, Writes, READ_COMMITTED)

    async def _on_driver(
        self, work: Callable[[R], Awaitable[T]], handle: type[R], transaction: dict | None
    ) -> T:
        """`work` on a pooled connection's driver, in a transaction with these options (see
        _reading() for the pooler's)."""
        pooled = await self.autocommit.raw_connection()  # the pool's checks run here
        driver = pooled.driver_connection
        try:
            statements = handle(driver, self.autocommit.dialect, self.sql_span)
            if transaction is None:
                return await work(statements)
            xact = driver.transaction(**transaction)
            await xact.start()
            try:
                result = await work(statements)
            except BaseException:
                with contextlib.suppress(Exception):  # the work's error is the answer
                    await xact.rollback()  # fails only on a broken connection: dropped below
                raise
            await xact.commit()
            return result
        except BaseException as exc:
            # A statement cut off (cancelled, timed out) leaves the connection usable: asyncpg
            # sends the server a cancel and the next statement waits for it. Not one that is
            # lost, or still in a transaction (its rollback failed or was cut off too).
            if driver.is_closed() or driver.is_in_transaction():
                pooled.invalidate()
            if driver.is_closed() and type(exc) is asyncpg.InternalClientError:
                # The server closed it under this statement (a shutdown): an outage (503).
                raise asyncpg.ConnectionDoesNotExistError(f"connection lost: {exc}") from exc
            raise
        finally:
            await self._give_back(pooled)

    async def _give_back(self, pooled: PoolProxiedConnection) -> None:
        """Back to the pool (its transaction, if any, has ended). An overflow connection the
        pool would close is closed here: out of a greenlet, the pool cannot await asyncpg's
        close and would leave the session open on the server."""
        pool = self.autocommit.pool
        if pooled.is_valid and isinstance(pool, QueuePool) and pool.checkedin() >= pool.size():
            driver = pooled.driver_connection
            pooled.detach()  # the pool counts it gone
            with contextlib.suppress(Exception):  # a connection lost already is closed
                await driver.close(timeout=POOL_CLOSE_TIMEOUT_SECONDS)
            return
        pooled.close()  # queued: no I/O (reads and writes leave no SQLAlchemy transaction)

    async def probe(self, work: Work[T]) -> T:
        """`work(conn)` like `read`, but outside the gate, on the connection kept for it."""
        return await _run(self._reading, work)

    async def dispose(self) -> None:
        await self.autocommit.dispose()

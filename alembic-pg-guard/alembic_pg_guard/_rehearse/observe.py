"""What a revision does to the database while it runs, seen from two sides.

`StatementTracer` hooks SQLAlchemy's cursor events inside this process (where the
project's runner applies the revision): each statement's time, the locks its transaction
holds afterwards, the rows it read and wrote (pg_stat_xact_user_tables, diffed on the
same connection), and when its transaction ended (the row locks it took end there).
`LockSampler` polls pg_stat_activity/pg_locks from another connection: client backends
waiting on a lock, and who holds it. `LongReader` is the report that a migration's ALTER
has to wait out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2
from sqlalchemy import Engine, event

# Table locks that make clients wait: writers (INSERT/UPDATE/DELETE take ROW EXCLUSIVE)
# for all of these, readers too for ACCESS EXCLUSIVE.
BLOCKS_WRITES = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
BLOCKS_READS = {"AccessExclusiveLock"}

XACT_STATS = """
    SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0), n_tup_upd + n_tup_del
    FROM pg_stat_xact_user_tables WHERE schemaname = 'public'"""
HELD_LOCKS = """
    SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE l.pid = pg_backend_pid() AND l.granted AND n.nspname = 'public' AND c.relkind = 'r'"""
LOCK_WAITS = """
    SELECT w.pid, w.usename, extract(epoch FROM now() - w.query_start), wl.mode,
           coalesce(wc.relname, wl.locktype), b.pid, b.usename, left(b.query, 300),
           (SELECT string_agg(DISTINCT bl.mode, ',') FROM pg_locks bl
             WHERE bl.pid = b.pid AND bl.granted AND bl.relation = wl.relation)
    FROM pg_stat_activity w
    JOIN pg_locks wl ON wl.pid = w.pid AND NOT wl.granted
    LEFT JOIN pg_class wc ON wc.oid = wl.relation
    CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
    JOIN pg_stat_activity b ON b.pid = bp.pid
    WHERE w.datname = current_database() AND w.pid <> pg_backend_pid()"""


@dataclass
class Statement:
    """One statement of a migration: when, what, and what it did to each table."""

    start: float
    end: float
    sql: str
    autocommit: bool
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)  # updated or deleted: row-locked
    locks: dict[str, list[str]] = field(default_factory=dict)
    released: float | None = None  # its transaction's COMMIT or ROLLBACK

    @property
    def locked_rows(self) -> int:
        return sum(self.rows_written.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _query(dbapi_connection: Any, sql: str) -> list[tuple]:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


class StatementTracer:
    """Records the statements of every SQLAlchemy engine in this process while active."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self._pending: dict[int, tuple[float, dict[str, tuple[int, int]]]] = {}
        self._open: dict[int, list[Statement]] = {}  # by DBAPI connection: not yet ended
        self.active = False
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        event.listen(Engine, "commit", self._ended)
        event.listen(Engine, "rollback", self._ended)

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._before)
        event.remove(Engine, "after_cursor_execute", self._after)
        event.remove(Engine, "commit", self._ended)
        event.remove(Engine, "rollback", self._ended)

    def _ended(self, conn) -> None:
        """Before a COMMIT or ROLLBACK, which releases the transaction's row locks."""
        if conn.closed:
            return
        now, raw = time.monotonic(), conn.connection.dbapi_connection
        for st in self._open.pop(id(raw), []):
            st.released = now

    @staticmethod
    def _stats(dbapi_connection: Any) -> dict[str, tuple[int, int]]:
        rows = _query(dbapi_connection, XACT_STATS)
        return {name: (read, written) for name, read, written in rows}

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.active:
            return
        raw = cursor.connection
        stats = {} if raw.autocommit else self._stats(raw)
        self._pending[id(cursor)] = (time.monotonic(), stats)

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.active or id(cursor) not in self._pending:
            return
        start, before = self._pending.pop(id(cursor))
        end = time.monotonic()
        raw = cursor.connection
        record = Statement(start, end, " ".join(statement.split())[:300], raw.autocommit)
        if raw.autocommit:  # committed: the locks are gone, the counters may be flushed
            record.released = end
        else:
            self._open.setdefault(id(raw), []).append(record)
            for name, (read, written) in self._stats(raw).items():
                was_read, was_written = before.get(name, (0, 0))
                if read - was_read:
                    record.rows_read[name] = read - was_read
                if written - was_written:
                    record.rows_written[name] = written - was_written
            for name, mode in _query(raw, HELD_LOCKS):
                record.locks.setdefault(name, []).append(mode)
        self.statements.append(record)


@dataclass
class LockWait:
    """A client backend seen waiting on a lock, and the backend that holds it."""

    t: float
    waiter_pid: int
    waiter_user: str
    waited: float
    mode: str
    relation: str
    blocker_pid: int
    blocker_user: str
    blocker_query: str
    blocker_modes: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockSampler(threading.Thread):
    """Polls lock waits every `interval` seconds from its own connection until stopped."""

    def __init__(self, dsn: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="lock-sampler")
        self.dsn = dsn
        self.interval = interval
        self.waits: list[LockWait] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            while not self._stop_event.wait(self.interval):
                now = time.monotonic()
                with conn.cursor() as cursor:
                    cursor.execute(LOCK_WAITS)
                    for row in cursor.fetchall():
                        self.waits.append(LockWait(now, *row[:2], float(row[2] or 0), *row[3:]))
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _per_table(dsn: str, column: str) -> dict[str, int]:
    """`column` of pg_class for each public table."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT c.relname, {column} FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
            return dict(cursor.fetchall())
    finally:
        conn.close()


def relfilenodes(dsn: str) -> dict[str, int]:
    """Each public table's storage file: a new one after a revision means a rewrite."""
    return _per_table(dsn, "c.relfilenode")


def table_rows(dsn: str) -> dict[str, int]:
    """Each public table's row count (the planner's estimate: seeded tables are analyzed)."""
    return _per_table(dsn, "greatest(c.reltuples, 0)::bigint")


def dead_tuples(dsn: str) -> dict[str, int]:
    """Each public table's dead row versions (pg_stat_user_tables.n_dead_tup)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'public'"
            )
            return dict(cursor.fetchall())
    finally:
        conn.close()


def wal_position(dsn: str, since: str | None = None) -> tuple[str, int]:
    """The current WAL position, and the bytes of WAL written since `since`."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pg_current_wal_lsn()::text, "
                "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn), 0)::bigint",
                (since,),
            )
            lsn, written = cursor.fetchone()
            return lsn, written
    finally:
        conn.close()


class LongReader(threading.Thread):
    """A transaction holding ACCESS SHARE on `tables` (a report, pg_dump) for `seconds`, or
    until stopped: a migration's ALTER waits behind it, and the app's queries behind that."""

    def __init__(self, dsn: str, tables: list[str], seconds: float) -> None:
        super().__init__(daemon=True, name="long-reader")
        self.dsn, self.tables, self.seconds = dsn, tables, seconds
        self.holding = threading.Event()
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn, application_name="rehearsal long reader")
        except psycopg2.Error as exc:
            self.error = str(exc).strip()
            self.holding.set()
            return
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET lock_timeout = 5000")
                names = ", ".join(f'"{t}"' for t in self.tables)
                cursor.execute(f"LOCK TABLE {names} IN ACCESS SHARE MODE")
            self.holding.set()
            self._stop_event.wait(self.seconds)
            conn.rollback()
        except psycopg2.Error as exc:
            self.error = str(exc).strip()
        finally:
            self.holding.set()
            conn.close()

    def __enter__(self) -> LongReader:
        if self.tables and self.seconds > 0:
            self.start()
            self.holding.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        """The revision is done: end the read now, if it still runs."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)

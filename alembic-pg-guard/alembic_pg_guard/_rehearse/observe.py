"""What a revision does to the database while it runs, seen from two sides.

`StatementTracer` hooks SQLAlchemy's cursor events inside this process (where the
project's runner applies the revision): each statement's time, the locks its transaction
holds afterwards, and the rows it read and wrote (pg_stat_xact_user_tables, diffed on the
same connection). `LockSampler` polls pg_stat_activity/pg_locks from another connection:
client backends waiting on a lock, and who holds it.
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
    rows_written: dict[str, int] = field(default_factory=dict)
    locks: dict[str, list[str]] = field(default_factory=dict)

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
        self.active = False
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._before)
        event.remove(Engine, "after_cursor_execute", self._after)

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
        if not raw.autocommit:  # autocommit: the locks are gone, the counters may be flushed
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

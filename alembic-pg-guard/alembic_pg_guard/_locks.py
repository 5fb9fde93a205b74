"""Lock waits of a migration: who blocks it, and concurrent index builds' own waiting policy.

A lock_timeout (SQLSTATE 55P03) cancels the waiting statement, and with it the
pg_blocking_pids() answer: a sampler on its own connection records the blockers while the
migrator waits. `CREATE/DROP INDEX CONCURRENTLY` and `REINDEX ... CONCURRENTLY` wait for
every older transaction on any table (pg_dump, a report): they get
MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS as their lock_timeout instead of
MIGRATION_LOCK_TIMEOUT_MS (the guard's README, "Locks").
"""

import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import URL, Connection, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from alembic_pg_guard._settings import GuardSettings

LOCK_NOT_AVAILABLE = "55P03"
CONCURRENTLY = re.compile(
    r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+CONCURRENTLY\b",
    re.IGNORECASE,
)
BLOCKERS = text(
    "SELECT b.pid, b.usename, b.state, "
    "left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 120) AS query, "
    "round(extract(epoch FROM now() - coalesce(b.xact_start, b.query_start))::numeric, 1) "
    "AS age FROM unnest(pg_blocking_pids(:pid)) AS blocker(pid) "
    "JOIN pg_stat_activity b ON b.pid = blocker.pid ORDER BY age DESC NULLS LAST"
)


@dataclass(frozen=True)
class Blocker:
    pid: int
    user: str | None
    state: str | None
    query: str
    age_seconds: float | None

    def __str__(self) -> str:
        age = f" for {self.age_seconds:g}s" if self.age_seconds is not None else ""
        return (
            f"pid {self.pid} ({self.user or '?'}, {self.state or '?'}{age}, "
            f"last query: {self.query or '?'})"
        )


# Lock retries back off up to this delay: a reader long enough to need more is waited
# out by the total (lock_retry_total_seconds), not by ever longer sleeps.
MAX_RETRY_DELAY_SECONDS = 10.0


def retry_delay(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """The sleep before retry `attempt` (1, 2, ...): `base` doubling, capped, with half of
    it random ("equal jitter"), so that several migrators never retry in step."""
    ceiling = min(max(base, MAX_RETRY_DELAY_SECONDS), base * 2 ** (attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE


def is_concurrent(statement: str) -> bool:
    return bool(CONCURRENTLY.match(statement))


class BlockerSampler:
    """Polls pg_blocking_pids(pid) on its own connection; keeps the last blockers seen."""

    def __init__(self, url: URL, pid: int, interval: float) -> None:
        # Its own engine: the migrator's may hand out one shared connection (StaticPool).
        self.engine = create_engine(url, poolclass=NullPool)
        self.pid, self.interval = pid, interval
        self.seen: list[Blocker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blocker-sampler", daemon=True)

    def reset(self) -> None:
        self.seen = []

    def _run(self) -> None:
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("SET application_name = 'migration blocker sampler'")
                while not self._stop.wait(self.interval):
                    rows = conn.execute(BLOCKERS, {"pid": self.pid}).all()
                    if rows:
                        self.seen = [
                            Blocker(
                                r.pid,
                                r.usename,
                                r.state,
                                r.query,
                                None if r.age is None else float(r.age),
                            )
                            for r in rows
                        ]
        except Exception:
            return

    def __enter__(self) -> "BlockerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()

    def describe(self) -> str:
        if not self.seen:
            return "no blocking session was seen (it ended, or was too quick to sample)"
        return "blocked by " + "; ".join(str(b) for b in self.seen[:3])


@dataclass
class ConcurrentPolicy:
    """Gives concurrent index statements their own lock_timeout (and room in
    statement_timeout for the wait). `running`: the concurrent statement under way, which
    is still set when that statement failed."""

    settings: GuardSettings
    running: str | None = None

    def _limits(self, concurrent: bool) -> tuple[int, int]:
        s = self.settings
        if not concurrent:
            return s.lock_timeout_ms, s.statement_timeout_ms
        wait, run = s.concurrent_index_timeout_ms, s.statement_timeout_ms
        return wait, 0 if 0 in (wait, run) else wait + run

    def _set(self, cursor, concurrent: bool) -> None:
        lock_ms, statement_ms = self._limits(concurrent)
        with cursor.connection.cursor() as own:
            own.execute(f"SET lock_timeout = {lock_ms}; SET statement_timeout = {statement_ms}")

    def before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        concurrent = is_concurrent(statement)
        if concurrent or self.running:  # after a failed one: the usual limits again
            self._set(cursor, concurrent)
        self.running = " ".join(statement.split()) if concurrent else None

    def after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.running:
            self._set(cursor, False)
            self.running = None


@contextmanager
def concurrent_index_policy(
    connection: Connection, settings: GuardSettings
) -> Iterator[ConcurrentPolicy]:
    policy = ConcurrentPolicy(settings)
    event.listen(connection, "before_cursor_execute", policy.before)
    event.listen(connection, "after_cursor_execute", policy.after)
    try:
        yield policy
    finally:
        event.remove(connection, "before_cursor_execute", policy.before)
        event.remove(connection, "after_cursor_execute", policy.after)

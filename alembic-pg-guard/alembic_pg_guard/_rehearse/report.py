"""Per-revision figures and verdicts from what the rehearsal recorded, and the timeline.

A request belongs to a revision's window when it was in flight while the revision ran
(intended send time before the revision ended, answer after it started). Only request
kinds that all succeeded just before the revision count: the load runs head's app code,
which may not work on older schemas yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic_pg_guard._rehearse import scans
from alembic_pg_guard._rehearse.observe import BLOCKS_READS, BLOCKS_WRITES, LockWait, Statement

# Before each revision, this many seconds of requests decide which kinds are live.
LIVENESS_SECONDS = 3.0
# "Whole-table work": a statement that reads or writes at least this share of a table of
# at least Budget.min_table_rows rows while a lock blocks that table's clients.
TABLE_SHARE = 0.5
# A request slower than this, or waiting this long behind the migration, is reported.
SLOW_REQUEST = 1.0
BACKFILL_FIX = (
    "backfill in batches committed separately (an autocommit_block or a separate job, each "
    "batch its own transaction, with a pause), in a revision of its own"
)
READ_FIX = "read before taking the lock: in a revision of its own, or in an autocommit_block"


@dataclass
class Budget:
    max_stall: float = 1.0
    max_errors: int = 0
    table_locks: bool = False  # True: allow whole-table work under a blocking lock
    # Tables smaller than this are not judged by the whole-table and rewrite rules.
    min_table_rows: int = 10_000
    # Rows a transaction may keep row-locked past max_stall (writers queue on them).
    max_locked_rows: int = 10_000
    # How long a request may wait behind the migration's lock attempt.
    max_lock_wait: float = 1.0


@dataclass
class Window:
    """One phase of the run: a revision being applied, or seeding."""

    kind: str  # "revision" | "seed"
    label: str
    start: float
    end: float
    error: str | None = None
    rewrites: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # each table's rows when it began
    since: float = 0.0  # when the previous revision ended
    wal_bytes: int = 0
    dead_tuples: int = 0  # new dead row versions in its tables (pg_stat_user_tables)
    long_reader: float = 0.0  # seconds a reader held ACCESS SHARE on every table at its start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def ok(status: int) -> bool:
    return 0 < status < 400


def live_kinds(records: list[list], before: float, since: float = 0.0) -> set[str]:
    """Kinds whose every request in the seconds before `before` (and after `since`, the
    end of the previous revision) succeeded."""
    seen: dict[str, bool] = {}
    start = max(before - LIVENESS_SECONDS, since)
    for intended, done, kind, status in records:
        if start <= intended < before and done <= before:
            seen[kind] = seen.get(kind, True) and ok(status)
    return {kind for kind, good in seen.items() if good}


def fmt_rows(n: int) -> str:
    return f"{n:,}"


def known_scan(st: Statement, rows: dict[str, int], budget: Budget) -> dict[str, Any] | None:
    """A statement whose SQL reads a whole seeded table under a client-blocking lock
    (scans.py), whatever it took here. SET NOT NULL counts only when its scan ran."""
    scan = scans.scan_of(st.sql)
    if scan is None or rows.get(scan.table, 0) < budget.min_table_rows:
        return None
    size = rows[scan.table]
    read = st.rows_read.get(scan.table, 0)
    if scan.needs_counters and (st.autocommit or read < TABLE_SHARE * size):
        return None
    return {
        "table": scan.table,
        "statement": st.sql,
        "seconds": round(st.end - st.start, 3),
        "rows_read": max(read, size),
        "rows_written": st.rows_written.get(scan.table, 0),
        "table_rows": size,
        "locks": [scan.lock],
        "blocks": scan.blocks,
        "fix": scan.fix,
    }


def whole_table_work(
    statements: Iterable[Statement], rows: dict[str, int], budget: Budget | None = None
) -> list[dict[str, Any]]:
    """Statements that read or wrote most of a big table while its clients were blocked:
    known from their SQL, or seen in their transaction's counters and locks."""
    budget = budget or Budget()
    found = []
    for st in statements:
        if known := known_scan(st, rows, budget):
            found.append(known)
            continue
        for table in set(st.rows_read) | set(st.rows_written) | set(st.locks):
            size = rows.get(table, 0)
            read, written = st.rows_read.get(table, 0), st.rows_written.get(table, 0)
            touched = max(read, written)
            if size < budget.min_table_rows or touched < TABLE_SHARE * size:
                continue
            modes = set(st.locks.get(table, []))
            blocking = sorted(modes & BLOCKS_WRITES)
            if written >= TABLE_SHARE * size:
                blocking.append("row locks on every row it wrote")
            if not blocking:
                continue
            found.append(
                {
                    "table": table,
                    "statement": st.sql,
                    "seconds": round(st.end - st.start, 3),
                    "rows_read": read,
                    "rows_written": written,
                    "table_rows": size,
                    "locks": blocking,
                    "blocks": "reads and writes" if modes & BLOCKS_READS else "writes",
                    "fix": BACKFILL_FIX if written else READ_FIX,
                }
            )
    return found


def row_locks(statements: list[Statement], end: float, budget: Budget) -> dict[str, Any]:
    """Rows updated or deleted in a transaction stay locked until it ends: how many, how
    long, and how many of them longer than the stall budget (after their statement)."""
    held = [(st, (st.released or end) - st.end) for st in statements if st.locked_rows]
    late = [(st, seconds) for st, seconds in held if seconds > budget.max_stall]
    return {
        "rows": sum(st.locked_rows for st, _ in held),
        "held_s": round(max((seconds for _, seconds in held), default=0.0), 3),
        "rows_held_past_budget": sum(st.locked_rows for st, _ in late),
        "first_statement": late[0][0].sql if late else None,
    }


def what_blocked(waits: list[LockWait], app_user: str) -> list[dict[str, Any]]:
    """Client lock waits, grouped by the lock and the statement that held it; the most
    often seen first (the longest wait may be sampled as the blocker commits)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for w in waits:
        if w.waiter_user != app_user:
            continue
        key = (w.mode, w.relation, w.blocker_query)
        g = groups.setdefault(
            key,
            {
                "waited_for": w.mode,
                "on": w.relation,
                "held": w.blocker_modes,
                "by": "the migration" if w.blocker_user != app_user else "another request",
                "statement": w.blocker_query,
                "max_wait_seen": 0.0,
                "samples": 0,
            },
        )
        g["max_wait_seen"] = round(max(g["max_wait_seen"], w.waited), 3)
        g["samples"] += 1
    return sorted(groups.values(), key=lambda g: (-g["samples"], -g["max_wait_seen"]))


def summarize(
    window: Window,
    records: list[list],
    statements: list[Statement],
    waits: list[LockWait],
    budget: Budget,
    app_user: str,
) -> dict[str, Any]:
    """The figures and the verdict of one revision."""
    rows = window.rows
    live = live_kinds(records, window.start, window.since)
    during = [r for r in records if r[2] in live and r[0] < window.end and r[1] > window.start]
    latencies = [done - intended for intended, done, _, _ in during]
    errors = [r for r in during if not ok(r[3])]
    mine = [s for s in statements if window.start <= s.start <= window.end]
    blocked = what_blocked([w for w in waits if window.start <= w.t <= window.end], app_user)
    # Queued behind the migration's lock request (it holds nothing that blocks them yet).
    behind = [
        g
        for g in blocked
        if g["by"] == "the migration" and not set((g["held"] or "").split(",")) & BLOCKS_WRITES
    ]
    lock_wait = max((g["max_wait_seen"] for g in behind), default=0.0)
    heavy = whole_table_work(mine, rows, budget)
    locks = row_locks(mine, window.end, budget)
    stall = max(latencies, default=0.0)
    reasons = []
    if window.error:
        reasons.append(f"failed: {window.error}")
    if stall > budget.max_stall:
        cause = ""
        if blocked:
            top = blocked[0]
            cause = (
                f": requests waited for {top['waited_for']} on {top['on']}, held by "
                f"{top['by']} running `{top['statement'][:120]}`"
            )
        reasons.append(f"client stall {stall:.2f} s > {budget.max_stall:g} s{cause}")
    if lock_wait > budget.max_lock_wait:
        top = max(behind, key=lambda g: g["max_wait_seen"])
        reader = f", a long reader holding ACCESS SHARE for {window.long_reader:g} s"
        reasons.append(
            f"a request waited {lock_wait:.2f} s > {budget.max_lock_wait:g} s for "
            f"{top['waited_for']} on {top['on']} behind the migration's `{top['statement'][:120]}`"
            f"{reader if window.long_reader else ''}: keep each lock attempt short "
            "(MIGRATION_LOCK_TIMEOUT_MS well under 1000, no SET lock_timeout in the revision) "
            "and let the jittered retries wait the reader out"
        )
    if len(errors) > budget.max_errors:
        statuses = sorted({r[3] for r in errors})
        reasons.append(f"{len(errors)} client errors (status {statuses}) > {budget.max_errors}")
    big_rewrites = [t for t in window.rewrites if rows.get(t, 0) >= budget.min_table_rows]
    if big_rewrites and not budget.table_locks:
        reasons.append(
            f"rewrote {', '.join(f'{t} ({fmt_rows(rows[t])} rows)' for t in big_rewrites)}: a "
            "new copy of the table written under ACCESS EXCLUSIVE, which blocks reads and "
            f"writes; {scans.REWRITE_FIX}"
        )
    if heavy and not budget.table_locks:
        h = heavy[0]
        reasons.append(
            f"whole-table work under a lock that blocks {h['blocks']}: {', '.join(h['locks'])} "
            f"on {h['table']} held while `{h['statement'][:120]}` read "
            f"{fmt_rows(h['rows_read'])} and wrote {fmt_rows(h['rows_written'])} rows of its "
            f"{fmt_rows(h['table_rows'])} ({h['seconds']:.2f} s here, longer on a bigger "
            f"table); {h['fix']}"
        )
    if locks["rows_held_past_budget"] > budget.max_locked_rows:
        reasons.append(
            f"row locks on {fmt_rows(locks['rows_held_past_budget'])} rows held for up to "
            f"{locks['held_s']:.2f} s > {budget.max_stall:g} s, until the revision's COMMIT "
            f"(from `{(locks['first_statement'] or '')[:120]}`), while writers to them wait; "
            f"{BACKFILL_FIX}"
        )
    return {
        "revision": window.label,
        "seconds": round(window.end - window.start, 3),
        "requests": len(during),
        "kinds_measured": sorted(live),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(stall * 1000, 1),
        "over_1s": sum(1 for x in latencies if x > SLOW_REQUEST),
        "errors": len(errors),
        "long_reader_s": window.long_reader,
        "max_lock_wait_ms": round(lock_wait * 1000, 1),
        "lock_waits": blocked,
        "rewrote": window.rewrites,
        "whole_table_work": heavy,
        "row_locks": locks,
        "wal_bytes": window.wal_bytes,
        "dead_tuples": window.dead_tuples,
        "statements": len(mine),
        "verdict": "failed" if window.error else ("over budget" if reasons else "pass"),
        "reasons": reasons,
    }


def plot(path: Path, records: list[list], windows: list[Window], origin: float, title: str) -> None:
    """Latency of every request by intended send time, revisions shaded and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5), dpi=110)
    served: set[str] = set()  # kinds that succeeded once: their errors are real
    good, bad, unserved = [], [], []
    for intended, done, kind, status in sorted(records):
        point = (intended - origin, (done - intended) * 1000)
        if ok(status):
            served.add(kind)
            good.append(point)
        else:
            (bad if kind in served else unserved).append(point)
    if unserved:
        label = "error of a request this schema cannot serve yet"
        ax.scatter(*zip(*unserved, strict=True), s=3, color="lightgrey", label=label)
    if good:
        ax.scatter(*zip(*good, strict=True), s=3, alpha=0.5, label="request", color="tab:blue")
    if bad:
        ax.scatter(*zip(*bad, strict=True), s=8, marker="x", label="error", color="tab:red")
    ax.set_yscale("log")
    top = max([y for _, y in good + bad + unserved], default=10.0)
    for i, w in enumerate(windows):
        color = "tab:grey" if w.kind == "seed" else ("tab:orange", "tab:green")[i % 2]
        ax.axvspan(w.start - origin, max(w.end, w.start + 0.05) - origin, color=color, alpha=0.25)
        ax.text(w.start - origin, top, w.label, rotation=90, fontsize=7, va="top", ha="right")
    ax.set_xlabel("intended send time (s since the load started)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

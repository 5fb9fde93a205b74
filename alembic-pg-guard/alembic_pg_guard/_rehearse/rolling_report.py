"""The rolling rehearsal's report: what the clients saw in each phase, how long no server
was routed, how the old server stopped; the verdict against the goal; table and files."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from alembic_pg_guard._rehearse.report import percentile
from alembic_pg_guard._rehearse.router import Router

if TYPE_CHECKING:
    from alembic_pg_guard._rehearse.rolling import Args, Releases, Rollout

GOAL = "0 failed requests, 0 s with no ready server, the old server drains in time"
COLUMNS = ("phase", "from s", "s", "requests", "p50 ms", "p99 ms", "max ms", "non-2xx",
           "conn errors")  # fmt: skip


@dataclass
class Phase:
    name: str
    start: float
    end: float = math.inf


def figures(phase: Phase, records: list[list], origin: float, last: bool) -> dict[str, Any]:
    """One phase's requests: those whose intended send time falls in it."""
    end = math.inf if last else phase.end
    mine = [r for r in records if phase.start <= r[0] < end]
    latencies = [(done - intended) * 1000 for intended, done, _, _ in mine]
    statuses = Counter(str(s) for *_, s in mine if s != -1 and not 200 <= s < 300)
    return {
        "phase": phase.name,
        "from_s": round(phase.start - origin, 2),
        "seconds": round(phase.end - phase.start, 2),
        "requests": len(mine),
        "non_2xx": dict(sorted(statuses.items())),
        "connection_errors": sum(1 for *_, s in mine if s == -1),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
    }


def failures(phase: dict[str, Any]) -> int:
    return sum(phase["non_2xx"].values()) + phase["connection_errors"]


def outcomes(phase: dict[str, Any]) -> str:
    """e.g. `503: 12, connection error: 1`"""
    named = [*phase["non_2xx"].items(), ("connection error", phase["connection_errors"])]
    return ", ".join(f"{what}: {n}" for what, n in named if n)


def result(
    rel: Releases, args: Args, rollout: Rollout, router: Router, records: list[list],
    origin: float | None,
) -> dict[str, Any]:  # fmt: skip
    t = args.timings
    start = origin if origin is not None else 0.0
    phases = [figures(p, records, start, i == len(rollout.phases) - 1)
              for i, p in enumerate(rollout.phases)]  # fmt: skip
    end = rollout.phases[-1].end if rollout.phases else start
    no_ready = router.empty_seconds(start, end) if origin is not None else 0.0
    reasons = []
    if failed := sum(failures(p) for p in phases):
        where = "; ".join(f"{p['phase']}: {outcomes(p)}" for p in phases if failures(p))
        reasons.append(f"{failed} failed request(s) ({where})")
    if no_ready > 0:
        reasons.append(f"{no_ready:.2f} s with no ready server")
    reasons += rollout.errors
    if rollout.old_killed:
        reasons.append(f"the old server did not exit within the {t.grace_period:g} s grace period")
    elif rollout.drain_s is not None and rollout.drain_s > t.drain_timeout:
        reasons.append(
            f"the old server drained for {rollout.drain_s:.1f} s > {t.drain_timeout:g} s"
        )
    warnings = []
    if not rollout.old_killed and rollout.old_exit not in (None, 0):
        warnings.append(
            f"the old server exited {rollout.old_exit} on SIGTERM, not 0: Kubernetes records "
            "its container as failed (the rollout goes on)"
        )
    return {
        "base": {"ref": rel.ref, "commit": rel.commit, "why": rel.why, "head": rel.base_head},
        "head": rel.head,
        "new_revisions": rel.new,
        "rows": args.rows,
        "rate": args.rate,
        "timings": t.as_dict(),
        "phases": phases,
        "requests": len(records),
        "failed": failed,
        "no_ready_server_s": round(no_ready, 3),
        "old_server": {
            "exit_code": rollout.old_exit,
            "killed": rollout.old_killed,
            "drain_s": None if rollout.drain_s is None else round(rollout.drain_s, 2),
        },
        "routed": {name: router.requests_to(name) for name in router.backends},
        "no_ready_backend": router.no_backend,
        "upstream_errors": dict(router.upstream_errors),
        "migration_s": None if rollout.migration_s is None else round(rollout.migration_s, 2),
        "events": [[round(when - start, 2), what] for when, what in router.events if when <= end],
        "goal": GOAL,
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
        "warnings": warnings,
    }


def rows(data: dict[str, Any]) -> list[list[str]]:
    return [
        [p["phase"], f"{p['from_s']:.1f}", f"{p['seconds']:.1f}", str(p["requests"]),
         str(p["p50_ms"]), str(p["p99_ms"]), str(p["max_ms"]),
         ", ".join(f"{s}: {n}" for s, n in p["non_2xx"].items()) or "0",
         str(p["connection_errors"])]
        for p in data["phases"]
    ]  # fmt: skip


def notes(data: dict[str, Any]) -> list[str]:
    old, base, t = data["old_server"], data["base"], data["timings"]
    if old["drain_s"] is None:
        drained = "not stopped by the rollout"
    elif old["killed"]:
        drained = f"killed at the end of the {t['grace_period']:g} s grace period"
    else:
        drained = f"exited {old['exit_code']} {old['drain_s']} s after SIGTERM"
    name = base["commit"][:12]
    name = name if base["ref"] == base["commit"] else f"{base['ref']} ({name})"
    migrated = "-" if data["migration_s"] is None else f"{data['migration_s']} s"
    sent = ", ".join(f"{backend} {n}" for backend, n in data["routed"].items())
    upstream = ", ".join(f"{what} {n}" for what, n in data["upstream_errors"].items()) or "0"
    verdict = ": " + "; ".join(data["reasons"]) if data["reasons"] else f" (goal: {data['goal']})"
    return [
        f"base {name} at {base['head']} → {data['head']}: {len(data['new_revisions'])} new "
        f"revision(s), migrated in {migrated} while the old server served",
        f"no ready server: {data['no_ready_server_s']:g} s while the load ran",
        f"routed: {sent}; no ready backend (503): {data['no_ready_backend']}; "
        f"upstream errors (502): {upstream}",
        f"old server: {drained} (drain timeout {t['drain_timeout']:g} s)",
        *(f"warning: {w}" for w in data["warnings"]),
        f"verdict: {data['verdict']}{verdict}",
    ]


def markdown(data: dict[str, Any]) -> str:
    lines = [f"| {' | '.join(COLUMNS)} |", f"|{' --- |' * len(COLUMNS)}"]
    lines += [f"| {' | '.join(row)} |" for row in rows(data)]
    return "\n".join([*lines, "", *(f"- {note}" for note in notes(data))]) + "\n"


def write(data: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(data, indent=2))
    (out / "report.md").write_text(markdown(data))


def show(data: dict[str, Any], out: Path, console: Console) -> None:
    title = f"rolling deploy {data['base']['head']} → {data['head']}, {data['rate']:g} requests/s"
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column == "phase")
    for row in rows(data):
        table.add_row(*row)
    console.print(table)
    for note in notes(data):
        console.print(note, highlight=False)
    console.print(f"report: {out / 'report.json'}, {out / 'report.md'}", highlight=False)

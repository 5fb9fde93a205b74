"""`pipenv run python -m bench.edge`: the shipped server (`python -m src.serve`, one
process) under many connections, each answer's latency kept per status (docs/edge.md).

wrk runs as many threads as connections (bench/edge.lua), so each thread's Lua state
sees one connection and can time its requests: wrk's own histogram mixes the 200s with
the 503s, and the point here is both at once: answered requests' p50/p99/max, and how
many 503s and how fast they came, plus what wrk hides: requests still unanswered when
it stops, and reconnect times. `GET /country/GB` is a cache hit, so what is measured is
the edge, not the database. `--compare` also runs it with the connection cap off
(MAX_CONNECTIONS past the load), `--baseline REF` first runs the code at a git ref (its
files from `git archive`) with the same cap. Results go to bench/results-edge.json, with
the machine and the load average before each run.

Not a test: nothing asserts timings. wrk shares the machine with the server.

    pipenv run python -m bench.edge                        # c=1000, 20 s, the default cap
    pipenv run python -m bench.edge --duration 10 --compare --baseline HEAD
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.run import (
    BENCH_DIR,
    WRK_MISSING,
    Server,
    machine,
    positive,
    query_database,
    server_env,
    write_results,
)
from devtools.embedded_pg import throwaway
from src import migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings

EDGE_SCRIPT = BENCH_DIR / "edge.lua"
DEFAULT_OUTPUT = BENCH_DIR / "results-edge.json"
PATH = "/country/GB"
CAP_OFF = 1_000_000  # MAX_CONNECTIONS past any load: no cap
GOALS = {"answered_p99_ms": 1000.0, "refused_max_ms": 100.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__)
    parser.add_argument("--connections", type=positive(int), default=1000, help="wrk -c")
    parser.add_argument("--duration", type=positive(float), default=20, help="seconds")
    parser.add_argument(
        "--max-connections",
        type=positive(int),
        default=Settings.model_fields["max_connections"].default,
        help="MAX_CONNECTIONS of the server (default: the setting's default)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="also run with the connection cap off"
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="first run the same cap on the code at this git ref (e.g. HEAD), side by side",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def spread(micros: list[int]) -> dict[str, float]:
    """Count, p50, p99 and max (ms) of latencies in microseconds."""
    if not micros:
        return {"count": 0}
    ordered = sorted(micros)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1000, 2)

    return {"count": len(ordered), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0)}


def run_wrk(wrk: str, url: str, connections: int, seconds: float) -> dict[str, Any]:
    command = [
        wrk,
        f"-t{connections}",  # one connection per thread: see bench/edge.lua
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(EDGE_SCRIPT),
        url + PATH,
    ]
    proc = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    summary = None
    by_status: dict[str, list[int]] = {}
    reconnects: list[int] = []
    pending: list[int] = []
    for line in proc.stdout.splitlines():
        if line.startswith("EDGE-SUMMARY "):
            summary = json.loads(line.removeprefix("EDGE-SUMMARY "))
        elif line.startswith("EDGE-ANSWER "):
            _, status, micros = line.split(" ")
            by_status.setdefault(status, []).append(int(micros))
        elif line.startswith("EDGE-RECONNECT "):
            reconnects.append(int(line.split(" ")[1]))
        elif line.startswith("EDGE-PENDING "):
            pending.append(int(line.split(" ")[1]))
    if proc.returncode != 0 or summary is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise CommandFailure(f"wrk failed on {url}: {' '.join(detail) or proc.returncode}")
    seconds_run = summary["duration_us"] / 1e6
    return {
        "rps": round(summary["requests"] / seconds_run),
        "wrk_all": {
            "p50_ms": summary["p50_us"] / 1000,
            "p99_ms": summary["p99_us"] / 1000,
            "max_ms": summary["max_us"] / 1000,
        },
        # wrk's: socket errors, and answers later than --timeout (those are in by_status).
        "errors": {k: summary[k] for k in summary if k.endswith(("_errors", "timeouts"))},
        "by_status": {status: spread(values) for status, values in sorted(by_status.items())},
        "no_retry_after_503s": summary["no_retry_after"],
        # Requests written but not answered when wrk stopped: their age then.
        "unanswered_at_end": spread(pending),
        # From a response that closed its connection (a 503) to the next request's write.
        "reconnect": spread(reconnects),
    }


def goal_check(run: dict[str, Any]) -> dict[str, bool]:
    """The issue's goal for one run: answered p99 within 1 s; every refusal within 100 ms,
    no answer later than wrk's --timeout, no request left unanswered past 1 s."""
    answered = run["by_status"].get("200", {})
    refused = run["by_status"].get("503", {})
    stuck = run["unanswered_at_end"].get("max_ms", 0) > GOALS["answered_p99_ms"]
    return {
        "answered_p99": answered.get("p99_ms", float("inf")) <= GOALS["answered_p99_ms"],
        "refused_max": refused.get("max_ms", 0) <= GOALS["refused_max_ms"]
        and not stuck
        and not run["errors"].get("timeouts"),
    }


@contextmanager
def exported(ref: str | None, into: Path) -> Iterator[Path | None]:
    """The project's files at `ref` (`git archive`: no worktree, the checkout is untouched)."""
    if ref is None:
        yield None
        return
    archive = subprocess.run(  # noqa: S603
        ["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", ref],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        detail = archive.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise CommandFailure(f"--baseline {ref}: git archive failed: {detail[0]}")
    where = into / "baseline"
    where.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(where, filter="data")
    yield where


def edge(args: argparse.Namespace, wrk: str, base: Settings) -> dict[str, Any]:
    runs = []
    with throwaway("country-edge-", user="bench", database="countries_edge") as pg:
        env = {**server_env(pg, base.db_pool_size, 0), "CACHE_ENABLED": "true"}
        settings = base.for_database(pg.url)
        print(f"PostgreSQL on {pg.host}:{pg.port}: {migrations.upgrade(settings)}", flush=True)
        pg_version, _ = query_database(pg)
        logs = pg.data_dir.parent
        with exported(args.baseline, logs) as baseline:
            variants = [("this checkout", args.max_connections, PROJECT_ROOT)]
            if baseline is not None:
                variants.insert(0, (f"baseline {args.baseline}", args.max_connections, baseline))
            if args.compare:
                variants.append(("this checkout", CAP_OFF, PROJECT_ROOT))
            for n, (code, cap, cwd) in enumerate(variants):
                server_env_ = {**env, "MAX_CONNECTIONS": str(cap)}
                log = logs / f"edge-{n}.log"
                with Server("served", 1, server_env_, log, cwd=cwd) as server:
                    load = os.getloadavg()
                    print(f"{code}, MAX_CONNECTIONS={cap}, load average {load[0]:.2f}: ", end="")
                    result = run_wrk(wrk, server.url, args.connections, args.duration)
                    print(json.dumps(result["by_status"]), flush=True)
                run = {"code": code, "max_connections": cap, "load_average_1m": load[0], **result}
                runs.append({**run, "goals_met": goal_check(run)})
    return {
        "machine": machine(pg_version, wrk),
        "settings": {
            "path": PATH,
            "connections": args.connections,
            "duration_s": args.duration,
            "max_concurrent_requests": base.max_concurrent_requests,
            "keep_alive_timeout_seconds": base.keep_alive_timeout_seconds,
        },
        "goals": GOALS,
        "runs": runs,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "| code | MAX_CONNECTIONS | load | req/s | 200s | p50 | p99 | max | 503s | p50 | p99 "
        "| max | oldest unanswered at the end | reconnect p99 | wrk errors | goal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | --- |",
    ]
    for run in results["runs"]:
        cap = "off" if run["max_connections"] == CAP_OFF else run["max_connections"]
        cells = [run["code"], str(cap), f"{run['load_average_1m']:.2f}", f"{run['rps']:,}"]
        for status in ("200", "503"):
            s = run["by_status"].get(status, {"count": 0})
            cells.append(f"{s['count']:,}")
            cells += [ms(s.get(k)) for k in ("p50_ms", "p99_ms", "max_ms")]
        cells.append(ms(run["unanswered_at_end"].get("max_ms")))
        cells.append(ms(run["reconnect"].get("p99_ms")))
        errors = run["errors"]
        cells.append(
            ", ".join(f"{v} {k.replace('_errors', '')}" for k, v in errors.items() if v) or "0"
        )
        met = run["goals_met"]
        cells.append("met" if all(met.values()) else ", ".join(k for k, v in met.items() if not v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ms(value: float | None) -> str:
    """A latency for the table: ms under a second, else seconds."""
    if value is None:
        return "-"
    return f"{value:.3g} ms" if value < 1000 else f"{value / 1000:.3g} s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with fail_on_errors():
        wrk = shutil.which("wrk")
        if wrk is None:
            raise CommandFailure(WRK_MISSING)
        started, load = time.monotonic(), os.getloadavg()
        results = edge(args, wrk, read_settings())
        # Before anything ran: each run's own figure also counts the previous run's wrk.
        results["settings"]["load_average_before"] = [round(x, 2) for x in load]
        results["settings"]["elapsed_s"] = round(time.monotonic() - started)
        m = results["machine"]
        print(
            f"\n{m['nproc']} CPUs ({m['cpu']}), {m['wrk']}; wrk -t{args.connections} "
            f"-c{args.connections} -d{args.duration:g}s on GET {PATH}, one process; "
            f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(report(results))
        write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

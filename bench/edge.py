"""`pipenv run python -m bench.edge`: the shipped server (`python -m src.serve`, one
process) under many connections, each answer's latency kept per status (docs/edge.md).

wrk runs as many threads as connections (bench/edge.lua), so each thread's Lua state
sees one connection and can time its requests: wrk's own histogram mixes the 200s with
the 503s, and the point here is both at once: answered requests' p50/p99/max, and how
many 503s and how fast they came. `GET /country/GB` is a cache hit, so what is measured
is the edge, not the database. `--compare` also runs it with the connection cap off
(MAX_CONNECTIONS past the load: what the server did before the cap). Results go to
bench/results-edge.json, with the machine and its load average before each run.

Not a test: nothing asserts timings. wrk shares the machine with the server.

    pipenv run python -m bench.edge                        # c=1000, 20 s, the default cap
    pipenv run python -m bench.edge --duration 10 --compare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
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
)
from devtools.embedded_pg import throwaway
from src import migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import Settings, read_settings

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
    for line in proc.stdout.splitlines():
        if line.startswith("EDGE-SUMMARY "):
            summary = json.loads(line.removeprefix("EDGE-SUMMARY "))
        elif line.startswith("EDGE-ANSWER "):
            _, status, micros = line.split(" ")
            by_status.setdefault(status, []).append(int(micros))
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
        "errors": {k: summary[k] for k in summary if k.endswith(("_errors", "timeouts"))},
        "by_status": {status: spread(values) for status, values in sorted(by_status.items())},
    }


def edge(args: argparse.Namespace, wrk: str, base: Settings) -> dict[str, Any]:
    caps = [args.max_connections] + ([CAP_OFF] if args.compare else [])
    runs = []
    with throwaway("country-edge-", user="bench", database="countries_edge") as pg:
        env = {**server_env(pg, base.db_pool_size, 0), "CACHE_ENABLED": "true"}
        settings = base.for_database(pg.url)
        print(f"PostgreSQL on {pg.host}:{pg.port}: {migrations.upgrade(settings)}", flush=True)
        pg_version, _ = query_database(pg)
        logs = pg.data_dir.parent
        for cap in caps:
            server_env_ = {**env, "MAX_CONNECTIONS": str(cap)}
            with Server("served", 1, server_env_, logs / f"edge-{cap}.log") as server:
                load = os.getloadavg()
                print(f"MAX_CONNECTIONS={cap}, load average {load[0]:.2f}: ", end="", flush=True)
                result = run_wrk(wrk, server.url, args.connections, args.duration)
                print(json.dumps(result["by_status"]), flush=True)
            runs.append({"max_connections": cap, "load_average_1m": load[0], **result})
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
        "| MAX_CONNECTIONS | req/s | 200: count | p50 | p99 | max "
        "| 503: count | p50 | p99 | max | socket errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results["runs"]:
        cap = "off" if run["max_connections"] == CAP_OFF else run["max_connections"]
        cells = [str(cap), str(run["rps"])]
        for status in ("200", "503"):
            s = run["by_status"].get(status, {"count": 0})
            cells.append(str(s["count"]))
            cells += [f"{s[k]:g} ms" if k in s else "-" for k in ("p50_ms", "p99_ms", "max_ms")]
        cells.append(str(sum(run["errors"].values())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with fail_on_errors():
        wrk = shutil.which("wrk")
        if wrk is None:
            raise CommandFailure(WRK_MISSING)
        started = time.monotonic()
        results = edge(args, wrk, read_settings())
        results["settings"]["elapsed_s"] = round(time.monotonic() - started)
        m = results["machine"]
        print(
            f"\n{m['nproc']} CPUs ({m['cpu']}), {m['wrk']}; wrk -t{args.connections} "
            f"-c{args.connections} -d{args.duration:g}s on GET {PATH}, one process"
        )
        print(report(results))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

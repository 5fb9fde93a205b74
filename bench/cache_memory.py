"""`pipenv run python -m bench.cache_memory`: does a real server's memory stay within
CACHE_MAX_MB when floods of distinct valid keys fill the response cache (docs/cache.md)?

`python -m src.serve` (one process) on a throwaway database, with the cache on
(CACHE_MAX_MB, default 64) and off, the same requests in the same order: every country
and its subdivisions, then thousands of distinct list pages (`limit` and `offset`: the
largest bodies), more searches than the cache keeps (`q=` random prefixes: small
bodies), a flood of unknown parameters (`?x=<random>`: refused with 422, kept nowhere),
and new pages again: large bodies, then small ones, then large ones is the mix that
leaves the most memory behind. RSS (VmRSS) is read after each phase; the cache's cost is
its growth beside the cache-off server's, against 1.25 x CACHE_MAX_MB. `--baseline REF`
also runs the code at a git ref (`git archive`) with the cache on.

Not a test: it reports figures. Results go to bench/results-cache-memory.json.

    pipenv run python -m bench.cache_memory                 # ~5 minutes
    pipenv run python -m bench.cache_memory --baseline HEAD --max-mb 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.edge import exported
from bench.run import BENCH_DIR, Server, positive, query_database, server_env, write_results
from devtools.embedded_pg import throwaway
from src import migrations
from src.cli import fail_on_errors
from src.config import PROJECT_ROOT, read_settings

DEFAULT_OUTPUT = BENCH_DIR / "results-cache-memory.json"
BOUND = 1.25  # the issue's: RSS growth within 1.25 x CACHE_MAX_MB
MB = 1024 * 1024
CONCURRENCY = 16
CACHE_ON, CACHE_OFF = "cache on", "cache off"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_memory", description=__doc__)
    parser.add_argument("--max-mb", type=positive(int), default=64, help="CACHE_MAX_MB")
    parser.add_argument(
        "--pages", type=positive(int), default=4000, help="distinct list pages per pass"
    )
    parser.add_argument("--searches", type=positive(int), default=15000, help="distinct q=")
    parser.add_argument("--unknown", type=positive(int), default=5000, help="?x= requests")
    parser.add_argument("--baseline", metavar="REF", help="also run the code at this git ref")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def phases(args: argparse.Namespace, codes: list[str]) -> list[tuple[str, list[str]]]:
    """The requests of each phase, the same for both servers (seeded)."""
    rng = random.Random(args.seed)  # noqa: S311 (reproducible requests, no secret)
    # limit 100-250 from offsets 0-150: each a distinct key and a 15-50 KB body.
    pairs = [(limit, offset) for limit in range(100, 251) for offset in range(151)]
    rng.shuffle(pairs)
    first, second = pairs[: args.pages], pairs[args.pages : 2 * args.pages]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        (
            "every country and its subdivisions",
            [f"/country/{c}" for c in codes]
            + [f"/country/{c}/subdivisions?limit=250" for c in codes],
        ),
        (f"{len(first):,} list pages", [f"/country?limit={n}&offset={o}" for n, o in first]),
        (
            f"{args.searches:,} searches",
            [f"/country?q={''.join(rng.choices(letters, k=4))}" for _ in range(args.searches)],
        ),
        (
            f"{args.unknown:,} unknown parameters (422)",
            [f"/country?limit=250&x={rng.getrandbits(64):x}" for _ in range(args.unknown)],
        ),
        (
            f"{len(second):,} more list pages",
            [f"/country?limit={n}&offset={o}" for n, o in second],
        ),
    ]


async def fetch_all(base_url: str, paths: list[str]) -> Counter[int]:
    """GET every path, CONCURRENCY at a time, on keep-alive connections: statuses."""
    statuses: Counter[int] = Counter()
    queue = iter(paths)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for path in queue:
                statuses[(await client.get(path)).status_code] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def measure(
    server: Server, plan: list[tuple[str, list[str]]], warmup: list[str]
) -> list[dict[str, Any]]:
    assert server.proc is not None
    asyncio.run(fetch_all(server.url, warmup))  # what the first requests allocate once
    rows = [{"phase": "started, each kind of request once", "rss": rss_bytes(server.proc.pid)}]
    for name, paths in plan:
        started = time.monotonic()
        statuses = asyncio.run(fetch_all(server.url, paths))
        rows.append(
            {
                "phase": name,
                "rss": rss_bytes(server.proc.pid),
                "statuses": dict(sorted(statuses.items())),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        print(f"  {name}: RSS {rows[-1]['rss'] / MB:.1f} MiB, {dict(statuses)}", flush=True)
    return rows


def cache_memory(args: argparse.Namespace) -> dict[str, Any]:
    base = read_settings()
    runs: dict[str, list[dict[str, Any]]] = {}
    loads: dict[str, float] = {}
    with throwaway("country-cache-memory-", user="bench", database="countries_cache") as pg:
        settings = base.for_database(pg.url)
        print(f"PostgreSQL on {pg.host}:{pg.port}: {migrations.upgrade(settings)}", flush=True)
        pg_version, codes = query_database(pg)
        plan = phases(args, codes)
        warmup = ["/country/GB", "/country?limit=250", "/country?q=united", "/country?x=1"]
        warmup += ["/country/GB/subdivisions?limit=250", "/country/XX"]
        env = {**server_env(pg, base.db_pool_size, 0), "CACHE_MAX_MB": str(args.max_mb)}
        with exported(args.baseline, pg.data_dir.parent) as baseline:
            variants = [(CACHE_ON, "true", PROJECT_ROOT), (CACHE_OFF, "false", PROJECT_ROOT)]
            if baseline is not None:
                variants.insert(0, (f"baseline {args.baseline}, cache on", "true", baseline))
            for n, (name, enabled, cwd) in enumerate(variants):
                loads[name] = os.getloadavg()[0]
                print(f"{name} (load average {loads[name]:.2f}):", flush=True)
                log = pg.data_dir.parent / f"cache-memory-{n}.log"
                run_env = {**env, "CACHE_ENABLED": enabled}
                with Server("served", 1, run_env, log, cwd=cwd) as server:
                    runs[name] = measure(server, plan, warmup)
    return {"postgresql": pg_version, "max_mb": args.max_mb, "load_average_1m": loads, "runs": runs}


def report(results: dict[str, Any]) -> str:
    """RSS per phase and run, and each cache-on run's growth beside the cache-off one's."""
    runs = results["runs"]
    off = runs[CACHE_OFF]
    on = [name for name in runs if name != CACHE_OFF]
    bound = BOUND * results["max_mb"]
    head = ["phase", *(f"{name}: RSS" for name in runs), "cache off: growth"]
    head += [f"{name}: growth - cache off's (x CACHE_MAX_MB)" for name in on]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" + " ---: |" * (len(head) - 1)]
    for i, row_off in enumerate(off):
        grown_off = (row_off["rss"] - off[0]["rss"]) / MB
        cells = [row_off["phase"], *(f"{runs[name][i]['rss'] / MB:.1f} MiB" for name in runs)]
        cells.append(f"{grown_off:+.1f} MiB")
        for name in on:
            own = (runs[name][i]["rss"] - runs[name][0]["rss"]) / MB - grown_off
            flag = "" if own <= bound else " **over**"
            cells.append(f"{own:+.1f} MiB ({own / results['max_mb']:.2f}x){flag}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with fail_on_errors():
        results = cache_memory(args)
        print()
        print(report(results))
        write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

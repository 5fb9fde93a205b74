"""`python -m bench.convergence`: how long until another process serves a change.

Two app processes with the response cache on (src/kit/cache.py), on a throwaway embedded
PostgreSQL. Each trial warms process B's cache for one country, changes the country
(through process A's API, or in SQL as psql would), and polls B as fast as it answers
until it serves the new version: the time from the write's acknowledgement to B's first
new answer bounds the convergence (it includes one poll's round trip). Prints the
median, p99 and max per writer; docs/cache.md has the figures. Not a test.

    python -m bench.convergence --trials 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx
import psycopg2

from bench.run import Server, http_get, server_env
from devtools.embedded_pg import throwaway
from src import migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import read_settings

TIMEOUT_S = 10.0


def wait_subscribed(url: str) -> None:
    deadline = time.monotonic() + 30
    while b'"subscribed"' not in http_get(url + "/ready")[1]:
        if time.monotonic() > deadline:
            raise CommandFailure(f"{url}: the cache never subscribed")
        time.sleep(0.05)


def converge(b: httpx.Client, expected: str) -> float:
    """Seconds until B serves `expected`, polling from now."""
    started = time.perf_counter()
    while b.get("/country/GB").json()["official_name"] != expected:
        if time.perf_counter() - started > TIMEOUT_S:
            raise CommandFailure(f"B did not converge within {TIMEOUT_S:g}s")
    return time.perf_counter() - started


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"median {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convergence")
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args(argv)
    with fail_on_errors(), throwaway("country-converge-", database="converge") as pg:
        settings = read_settings().for_database(pg.url)
        migrations.upgrade(settings)
        env = {**server_env(pg, 4, 0), "CACHE_ENABLED": "true"}
        logs = pg.data_dir.parent
        sql = psycopg2.connect(pg.url)
        sql.autocommit = True
        with (
            Server("app", 1, env, logs / "a.log") as a,
            Server("app", 1, env, logs / "b.log") as b,
            httpx.Client(base_url=a.url) as client_a,
            httpx.Client(base_url=b.url) as client_b,
        ):
            wait_subscribed(a.url)
            wait_subscribed(b.url)
            key = {"X-API-Key": env["API_KEY"]}
            results: dict[str, list[float]] = {"API write through A": [], "SQL UPDATE": []}
            for n in range(args.trials):
                for writer, samples in results.items():
                    value = f"{writer} {n}"
                    client_b.get("/country/GB")  # cached in B
                    if writer == "SQL UPDATE":
                        with sql.cursor() as cur:
                            cur.execute(
                                "UPDATE country SET official_name = %s WHERE alpha2 = 'GB'",
                                (value,),
                            )
                    else:
                        patched = client_a.patch(
                            "/country/GB", json={"official_name": value}, headers=key
                        )
                        if patched.status_code != 204:
                            raise CommandFailure(f"PATCH answered {patched.status_code}")
                    samples.append(converge(client_b, value))
            polls = []
            for _ in range(args.trials):
                started = time.perf_counter()
                client_b.get("/country/GB")
                polls.append(time.perf_counter() - started)
        sql.close()
        print(f"{args.trials} trials each, idle processes; one poll of B: {summary(polls)}")
        for writer, samples in results.items():
            print(f"  {writer:<20} → B serves it after {summary(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

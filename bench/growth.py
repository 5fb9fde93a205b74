"""`pipenv run bench --growth`: do the lists stay flat as a table grows?

One country's subdivisions grow from 10^3 to 10^6 rows in one throwaway database; at
each size the real app is loaded with wrk on three reads: the first page, a page 90%
deep (keyset cursor) and a substring search (trigram index). Each figure is compared
with its 10^3 one; the goal (docs/performance.md) is at most 1.5x at 10^6.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import psycopg2

from bench.run import Load, Server, server_env
from devtools.embedded_pg import EmbeddedPostgres, throwaway
from src import migrations
from src.config import Settings
from src.kit.pagination import encode_cursor

SIZES = (1_000, 10_000, 100_000, 1_000_000)
COUNTRY = ("QG", "QGG", "Growth")
READS = {
    "first": "first page",
    "deep": "page 90% deep (cursor)",
    "search": "substring search (q=)",
}
GOAL = 1.5
# Codes: six hex digits, which sort before every ISO code (those start with letters).
# Names: base64 of a hash, lower-cased by the search: ~40 symbols, so each trigram is rare.
GROW = """
INSERT INTO subdivision (country_id, code, name, type)
SELECT %(country)s, lpad(to_hex(n), 6, '0'),
       'Growth ' || encode(sha256(n::text::bytea), 'base64'), 'synthetic'
FROM generate_series(%(start)s, %(stop)s) AS n
"""


def connect(pg: EmbeddedPostgres):
    conn = psycopg2.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.database
    )
    conn.autocommit = True
    return conn


def grow_to(pg: EmbeddedPostgres, country_id: int, have: int, size: int) -> None:
    """Rows have+1 .. size of the synthetic country, generated in the database."""
    with closing(connect(pg)) as conn, conn.cursor() as cur:
        cur.execute(GROW, {"country": country_id, "start": have + 1, "stop": size})
        cur.execute("VACUUM (ANALYZE) subdivision")


def paths_at(pg: EmbeddedPostgres, country_id: int, size: int) -> dict[str, str]:
    """The three reads at this size: the deep page's cursor and a term one row matches."""
    with closing(connect(pg)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT code FROM subdivision WHERE country_id = %s ORDER BY code OFFSET %s LIMIT 1",
            (country_id, int(size * 0.9)),
        )
        deep_after = cur.fetchone()[0]
        cur.execute(
            "SELECT lower(substr(name, 12, 10)) FROM subdivision "
            "WHERE code = lpad(to_hex(%s), 6, '0')",
            (size // 2,),
        )
        term = cur.fetchone()[0]
    base = f"/country/{COUNTRY[0]}/subdivisions?limit=50"
    return {
        "first": base,
        "deep": f"{base}&cursor={encode_cursor(deep_after)}",
        "search": f"/country/{COUNTRY[0]}/subdivisions?q={term}",
    }


def run_growth(args: Any, wrk: str, base: Settings) -> dict[str, Any]:
    load = Load(wrk, args.threads, args.connections)
    results: dict[int, dict[str, dict[str, float]]] = {}
    started = time.monotonic()
    with throwaway("country-growth-", user="bench", database="countries_growth") as pg:
        settings = base.for_database(pg.url)
        print(f"PostgreSQL on {pg.host}:{pg.port}: {migrations.upgrade(settings)}", flush=True)
        with closing(connect(pg)) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO country (alpha2, alpha3, name) VALUES (%s, %s, %s) RETURNING id",
                COUNTRY,
            )
            country_id = cur.fetchone()[0]
        env = server_env(pg, args.pool_size, args.max_overflow)
        log = pg.data_dir.parent / "growth-app.log"
        have = 0
        for size in SIZES:
            t0 = time.monotonic()
            grow_to(pg, country_id, have, size)
            have = size
            print(f"{size:>9,} rows: filled in {time.monotonic() - t0:.1f}s", flush=True)
            paths = paths_at(pg, country_id, size)
            results[size] = {}
            with Server("app", 1, env, log) as server:
                for read, path in paths.items():
                    load.run(server.url, [path], args.warmup)
                    got = load.run(server.url, [path], args.duration)
                    results[size][read] = got
                    print(
                        f"{size:>9,} rows  {READS[read]:<24} {got['rps']:>8,.0f} req/s  "
                        f"p50 {got['p50_ms']:6.2f} ms  non-2xx {got['non_2xx']}",
                        flush=True,
                    )
    return {"results": results, "elapsed_s": round(time.monotonic() - started)}


def growth_table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    small = results[SIZES[0]]
    lines = [
        "| rows | read | req/s | p50 | throughput vs 10^3 | p50 vs 10^3 | goal (≤ 1.5x) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for size, reads in results.items():
        for read, got in reads.items():
            slower = small[read]["rps"] / got["rps"]
            p50 = got["p50_ms"] / small[read]["p50_ms"]
            ok = "met" if max(slower, p50) <= GOAL else "missed"
            lines.append(
                f"| {size:,} | {READS[read]} | {got['rps']:,.0f} | {got['p50_ms']:.2f} ms "
                f"| {1 / slower:.2f}x | {p50:.2f}x | {ok if size != SIZES[0] else '-'} |"
            )
    return "\n".join(lines)

"""`python -m bench.inprocess`: CPU time per request, with no HTTP server and no wrk.

Where `pipenv run bench` measures throughput of whole servers sharing the machine with
PostgreSQL and wrk, this measures what one request costs the Python process itself:
each ASGI app is called in-process (16 requests at a time, against a throwaway embedded
PostgreSQL with the real schema), and so are the SQLAlchemy and asyncpg steps underneath
`GET /country/{code}` on their own. It reports CPU microseconds per request (process
time, so waiting on PostgreSQL is not counted): the best of 3 runs after a warm-up. Access
lines on against off alternate `--pairs` times, cached and not: the median of those bests.

    python -m bench.inprocess              # pipenv run python -m bench.inprocess
    python -m bench.inprocess --requests 20000 --pairs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import orjson
import uvloop
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import greenlet_spawn  # not public: measured here only, for comparison

from bench.run import query_database
from bench.write_load import query_free_codes
from devtools.embedded_pg import throwaway
from src import migrations
from src.cli import fail_on_errors
from src.config import Settings, read_settings
from src.country.queries import COUNTRY_BY_CODE
from src.logs import configure_logging

CONCURRENCY = 16


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    """CPU µs per call, `CONCURRENCY` at a time: the best of 3 runs after a warm-up."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(worker(max(n // 10 // CONCURRENCY, 1)) for _ in range(CONCURRENCY)))
    runs = []
    for _ in range(3):
        started = time.process_time()
        await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
        runs.append((time.process_time() - started) / n * 1e6)
    return min(runs)


def asgi_get(app, paths: list[str]) -> Callable[[], Awaitable[None]]:
    """One GET of a random path through the ASGI app; it must answer 200."""

    async def call() -> None:
        path = random.choice(paths)  # noqa: S311
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        status = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"GET {path} answered {status}")

    return call


async def asgi_send(
    app, method: str, path: str, body: dict | None = None, headers: tuple = ()
) -> tuple[int, dict[bytes, bytes]]:
    """One request through the ASGI app: its status and response headers."""
    data = b"" if body is None else orjson.dumps(body)
    sent = [(b"host", b"127.0.0.1"), *headers]
    if body is not None:
        sent += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": sent,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    answer: dict = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer.update(status=message["status"], headers=dict(message["headers"]))

    await app(scope, receive, send)
    return answer["status"], answer["headers"]


def write_cycle(app, api_key: str, codes: list[str]) -> Callable[[], Awaitable[None]]:
    """bench/writes.lua's cycle as one call: POST a country, PATCH it with If-Match set to
    the POST's ETag, DELETE it; three requests, each must answer 2xx. A code per worker."""
    free = list(codes)
    key = (b"x-api-key", api_key.encode())

    async def cycle() -> None:
        code = free.pop()
        try:
            body = {"alpha2": code, "alpha3": code + "X", "name": "Benchland"}
            status, headers = await asgi_send(app, "POST", "/country", body, (key,))
            if_match = (b"if-match", headers.get(b"etag", b""))
            patched, _ = await asgi_send(
                app, "PATCH", f"/country/{code}", {"name": "Benchland II"}, (key, if_match)
            )
            deleted, _ = await asgi_send(app, "DELETE", f"/country/{code}", None, (key,))
            if (status, patched, deleted) != (201, 204, 204):
                raise RuntimeError(f"write cycle on {code} answered {status, patched, deleted}")
        finally:
            free.append(code)

    return cycle


async def measure(
    settings: Settings, codes: list[str], n: int, pairs: int, free: list[str]
) -> list[tuple[str, float]]:
    from bench.ceiling_app import create_ceiling_app
    from bench.floor_app import create_floor_app
    from bench.web_ceiling_app import create_web_ceiling_app
    from src.main import create_app

    by_code = [f"/country/{code}" for code in codes]
    results = []
    url = settings.async_url.render_as_string(hide_password=False)
    pool = settings.db_pool_size + settings.db_max_overflow
    async with LifespanManager(create_ceiling_app(url, pool)) as manager:
        cost = await cpu_per_call(asgi_get(manager.app, by_code), n)
        results.append(("ceiling: GET /country/{code} (Starlette + asyncpg pool)", cost))
    async with LifespanManager(create_floor_app(settings)) as manager:
        cost = await cpu_per_call(asgi_get(manager.app, by_code), n)
        results.append(("floor: GET /country/{code} (the app's FastAPI + asyncpg pool)", cost))
    async with LifespanManager(create_web_ceiling_app(settings)) as manager:
        cost = await cpu_per_call(asgi_get(manager.app, by_code), n)
        results.append(("web ceiling: GET /country/{code} (the app's FastAPI, from a dict)", cost))
    for pre_ping in (True, False):
        uncached = {"db_pool_pre_ping": pre_ping, "cache_enabled": False}
        async with LifespanManager(create_app(settings.model_copy(update=uncached))) as manager:
            cost = await cpu_per_call(asgi_get(manager.app, by_code), n)
            label = (
                "app: GET /country/{code} "
                f"(CACHE_ENABLED=false, DB_POOL_PRE_PING={str(pre_ping).lower()})"
            )
            results.append((label, cost))
            if not pre_ping:
                cost = await cpu_per_call(asgi_get(manager.app, ["/health"]), n)
                results.append(("app: GET /health (its FastAPI stack, no database)", cost))

    # Access lines on (JSON to a file, as a container's log) against off, same app, with
    # and without the response cache; alternated `pairs` times, as the machine drifts.
    with tempfile.TemporaryFile("w") as log:
        for cached in (True, False):
            runs: dict[str, list[float]] = {"INFO": [], "WARNING": []}
            for _ in range(pairs):
                for level in runs:
                    logged = settings.model_copy(
                        update={"log_level": level, "log_format": "json", "cache_enabled": cached}
                    )
                    with contextlib.redirect_stderr(log):  # the loggers keep this stream
                        configure_logging(logged)
                    async with LifespanManager(create_app(logged)) as manager:
                        runs[level].append(await cpu_per_call(asgi_get(manager.app, by_code), n))
            on, off = (statistics.median(runs[level]) for level in ("INFO", "WARNING"))
            cache = "cached" if cached else "CACHE_ENABLED=false"
            label = f"app: GET /country/{{code}} ({cache}), access lines"
            results.append((f"{label} on: {on / off:.2f}x off, median of {pairs}", on))
            results.append((f"{label} off, median of {pairs}", off))
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    logging.getLogger().handlers.clear()

    stmt = COUNTRY_BY_CODE[2]
    for pre_ping in (False, True):
        engine = create_async_engine(
            settings.async_url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=pre_ping,
            pool_size=CONCURRENCY,  # no overflow: its connections would be closed and
            max_overflow=0,  # reopened (authentication and all) as load varies
        )

        async def checkout(engine=engine) -> None:
            async with engine.connect():
                pass

        async def checkout_and_select(engine=engine) -> None:
            async with engine.connect() as conn:
                (await conn.execute(stmt, {"code": random.choice(codes)})).first()._asdict()  # noqa: S311

        def select(conn, code: str):
            return conn.execute(stmt, {"code": code}).first()

        def checkout_select(sync_engine, code: str):
            with sync_engine.connect() as conn:
                return select(conn, code)

        async def one_hop(engine=engine) -> None:
            code = random.choice(codes)  # noqa: S311
            (await greenlet_spawn(checkout_select, engine.sync_engine, code))._asdict()

        async def run_sync(engine=engine) -> None:
            code = random.choice(codes)  # noqa: S311
            async with engine.connect() as conn:
                (await conn.run_sync(select, code))._asdict()

        suffix = ", pre-ping" if pre_ping else ""
        for label, call in (
            (f"SQLAlchemy checkout alone{suffix}", checkout),
            (f"SQLAlchemy checkout + prebuilt SELECT, awaited calls{suffix}", checkout_and_select),
            (
                f"SQLAlchemy checkout + SELECT in AsyncConnection.run_sync{suffix}",
                run_sync,
            ),
            (f"SQLAlchemy checkout + SELECT, one private greenlet_spawn hop{suffix}", one_hop),
        ):
            results.append((label, await cpu_per_call(call, n)))
        await engine.dispose()

    # Writes, per request (a cycle is three), against the write ceiling's in the same run.
    api_key = settings.api_key.get_secret_value()
    write_ceiling = create_ceiling_app(url, pool, api_key=api_key)
    for label, target in (
        ("write ceiling: POST, PATCH, DELETE /country (Starlette + asyncpg pool)", write_ceiling),
        (
            "app: POST, PATCH, DELETE /country (CACHE_ENABLED=false)",
            create_app(settings.model_copy(update={"cache_enabled": False})),
        ),
    ):
        async with LifespanManager(target) as manager:
            cost = await cpu_per_call(write_cycle(manager.app, api_key, free), n // 3)
            results.append((label, cost / 3))

    from src.country import queries
    from src.db import Database

    database = Database(settings.model_copy(update={"db_pool_size": CONCURRENCY}))
    try:

        async def database_read() -> None:
            code = random.choice(codes)  # noqa: S311
            await database.read(lambda reads: queries.country(reads, code))

        label = "Database.read: checkout + the country's SELECT on the driver (src/reads.py)"
        results.append((label, await cpu_per_call(database_read, n)))
    finally:
        await database.dispose()

    import asyncpg

    dsn = settings.async_url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=20) as pool:
        query = (
            "SELECT alpha2, alpha3, numeric, name, official_name, created_at, source FROM country "
        )
        query += "WHERE alpha2 = $1"

        async def fetchrow() -> None:
            dict(await pool.fetchrow(query, random.choice(codes)))  # noqa: S311

        cost = await cpu_per_call(fetchrow, n)
        results.append(("asyncpg pool.fetchrow (and its reset on release)", cost))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--requests", type=int, default=8000, help="per measurement run")
    parser.add_argument(
        "--pairs", type=int, default=3, help="access lines on/off, alternated this many times"
    )
    defaults = Settings.model_fields
    parser.add_argument("--pool-size", type=int, default=defaults["db_pool_size"].default)
    parser.add_argument("--max-overflow", type=int, default=defaults["db_max_overflow"].default)
    args = parser.parse_args(argv)
    with fail_on_errors():
        base = read_settings()
    with fail_on_errors(), throwaway("country-inprocess-", user="bench") as pg:
        settings = base.for_database(pg.url).model_copy(
            update={"db_pool_size": args.pool_size, "db_max_overflow": args.max_overflow}
        )
        print(migrations.upgrade(settings), flush=True)
        codes = query_database(pg)[1]
        free = query_free_codes(pg.url)[:CONCURRENCY]
        uvloop.install()
        results = asyncio.run(measure(settings, codes, args.requests, args.pairs, free))
    print(f"\nCPU µs per request, {CONCURRENCY} at a time, best of 3:")
    for label, cost in results:
        print(f"  {cost:7.0f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

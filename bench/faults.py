"""`pipenv run faults`: the app under reads and writes while PostgreSQL fails and returns.

Each fault runs on its own throwaway embedded cluster, migrated by the real runner, with
the real app (in process, over ASGI) logging in as its least-privilege role:

- smart: `pg_ctl stop -m smart` while a session stays open, then that session
  terminates the app's backends (new connections get 57P03 "shutting down");
- fast: `pg_ctl stop -m fast` (every backend terminated, 57P01), then a restart;
- kill9: SIGKILL to the postmaster (a crash), then a restart;
- full: every connection slot taken (53300 "too many connections"), then released.

Every response must be 2xx or 503 with the JSON body and Retry-After, never 500; every
write answered 201 must be in the database afterwards. Figures: docs/production.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from itertools import product
from string import ascii_uppercase
from typing import Any

import httpx
import psycopg2
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from devtools.embedded_pg import EmbeddedPostgres, throwaway
from src import migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import Settings, read_settings
from src.main import create_app

API_KEY = "fault-run-api-key"
APP_ROLE = "country_api_faults"
Fault = Callable[[EmbeddedPostgres, Settings], Awaitable[None]]


@dataclass
class Run:
    """What the clients saw during one fault."""

    statuses: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # responses that break the promise
    acknowledged: list[str] = field(default_factory=list)  # alpha2 of writes answered 201
    outage_s: float | None = None  # the fault, from its start until the database is back
    recovery_s: float | None = None  # from then until the app serves a read and /ready

    def summary(self, name: str, lost: list[str]) -> dict[str, Any]:
        return {
            "fault": name,
            "requests": sum(self.statuses.values()),
            "503": self.statuses[503],
            "500": self.statuses[500],
            "other_bad": len(self.bad) - self.statuses[500],
            "writes_acknowledged": len(self.acknowledged),
            "writes_lost": len(lost),
            "outage_s": None if self.outage_s is None else round(self.outage_s, 2),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3),
        }


def owner_connect(pg: EmbeddedPostgres):
    conn = psycopg2.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.database
    )
    conn.autocommit = True
    return conn


def free_codes(pg: EmbeddedPostgres) -> list[str]:
    with closing(owner_connect(pg)) as conn, conn.cursor() as cur:
        cur.execute("SELECT alpha2 FROM country")
        taken = {row[0] for row in cur.fetchall()}
    return [a + b for a, b in product(ascii_uppercase, repeat=2) if a + b not in taken]


def terminate_app_backends(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (APP_ROLE,),
        )


async def restart(pg: EmbeddedPostgres, seconds: float = 30) -> None:
    """Start again; after a crash the old backends may hold shared memory a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await asyncio.to_thread(pg.start)
            return
        except CommandFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def smart(pg: EmbeddedPostgres, settings: Settings) -> None:
    with closing(owner_connect(pg)) as session:  # keeps the smart shutdown waiting
        await asyncio.to_thread(pg.stop, None, "smart", False)
        await asyncio.sleep(0.3)
        terminate_app_backends(session)
        await asyncio.sleep(1.5)  # the app now meets "the database system is shutting down"
    await asyncio.to_thread(wait_stopped, pg)
    await restart(pg)


async def fast(pg: EmbeddedPostgres, settings: Settings) -> None:
    await asyncio.to_thread(pg.stop, None, "fast")
    await asyncio.sleep(1.5)
    await restart(pg)


async def kill9(pg: EmbeddedPostgres, settings: Settings) -> None:
    identity = pg.identity()
    assert identity is not None
    os.kill(identity.pid, signal.SIGKILL)
    await asyncio.sleep(1.5)
    await asyncio.to_thread(wait_stopped, pg)  # until the dead postmaster is reaped
    await restart(pg)


async def full(pg: EmbeddedPostgres, settings: Settings) -> None:
    """Take every slot the app's role can have, terminate its sessions, then free them."""
    with closing(owner_connect(pg)) as admin:
        with admin.cursor() as cur:
            cur.execute("SHOW max_connections")
            slots = int(cur.fetchone()[0])
        hogs = []
        try:
            while len(hogs) < slots:
                try:
                    hogs.append(await asyncio.to_thread(owner_connect, pg))
                except psycopg2.OperationalError:
                    break  # only superuser slots are left, which the app role cannot use
            terminate_app_backends(admin)
            await asyncio.sleep(1.5)
        finally:
            for conn in hogs:
                conn.close()


def wait_stopped(pg: EmbeddedPostgres, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while pg.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)


FAULTS: dict[str, Fault] = {"smart": smart, "fast": fast, "kill9": kill9, "full": full}


async def check(response: httpx.Response, run: Run) -> None:
    run.statuses[response.status_code] += 1
    if response.status_code < 300:
        return
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    if response.status_code != 503 or "retry-after" not in response.headers or not body:
        run.bad.append(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:120]}"
        )


async def reader(client: httpx.AsyncClient, run: Run, stop: asyncio.Event) -> None:
    paths = ["/country/FR", "/country?limit=20", "/country/FR/subdivisions?limit=20", "/ready"]
    i = 0
    while not stop.is_set():
        await check(await client.get(paths[i % len(paths)]), run)
        i += 1
        await asyncio.sleep(0.005)


async def writer(client: httpx.AsyncClient, run: Run, stop: asyncio.Event, codes: list[str]):
    while not stop.is_set() and codes:
        alpha2 = codes.pop()
        body = {"alpha2": alpha2, "alpha3": f"Q{alpha2}", "name": f"Fault {alpha2}"}
        response = await client.post("/country", json=body, headers={"X-API-Key": API_KEY})
        await check(response, run)
        if response.status_code == 201:
            run.acknowledged.append(alpha2)
        await asyncio.sleep(0.02)


async def recovered(client: httpx.AsyncClient, since: float, seconds: float = 60) -> float:
    """Seconds from `since` until a read and a write both succeed again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        read = await client.get("/country/FR")
        ready = await client.get("/ready")
        if read.status_code == 200 and ready.status_code == 200:
            return time.monotonic() - since
        await asyncio.sleep(0.05)
    raise AssertionError(f"the app did not recover within {seconds:g}s")


def lost_writes(pg: EmbeddedPostgres, acknowledged: list[str]) -> list[str]:
    with closing(owner_connect(pg)) as conn, conn.cursor() as cur:
        cur.execute("SELECT alpha2 FROM country WHERE alpha2 = ANY(%s)", (acknowledged,))
        present = {row[0] for row in cur.fetchall()}
    return sorted(set(acknowledged) - present)


async def fault_run(name: str, base: Settings, readers: int = 4) -> dict[str, Any]:
    """One fault, start to finish, on its own cluster; the summary of what clients saw."""
    with throwaway(prefix=f"country-fault-{name}-") as pg:
        settings = base.for_database(pg.url).model_copy(
            update={
                "environment": "test",
                "api_key": SecretStr(API_KEY),
                "postgres_app_user": APP_ROLE,
                "postgres_app_password": SecretStr("fault-run-password"),
                "db_pool_size": 5,
            }
        )
        await asyncio.to_thread(migrations.upgrade, settings)
        codes = free_codes(pg)
        run, stop = Run(), asyncio.Event()
        async with LifespanManager(create_app(settings)) as manager:
            # A 500 is an answer to count, not an exception to raise in the client.
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                load = [asyncio.create_task(reader(client, run, stop)) for _ in range(readers)]
                load.append(asyncio.create_task(writer(client, run, stop, codes)))
                await asyncio.sleep(0.5)
                started = time.monotonic()
                await FAULTS[name](pg, settings)  # returns once the database is back
                back = time.monotonic()
                run.outage_s = back - started
                run.recovery_s = await recovered(client, back)
                await asyncio.sleep(0.5)
                stop.set()
                await asyncio.gather(*load)
        summary = run.summary(name, lost_writes(pg, run.acknowledged))
        summary["bad_examples"] = run.bad[:3]
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipenv run faults", description=__doc__)
    parser.add_argument("faults", nargs="*", metavar="FAULT", help=f"of {', '.join(FAULTS)}")
    args = parser.parse_args(argv)
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown fault {', '.join(sorted(unknown))}; choose from {', '.join(FAULTS)}")
    with fail_on_errors():
        base = read_settings()
        results = [asyncio.run(fault_run(name, base)) for name in args.faults or FAULTS]
        columns = [
            "fault",
            "requests",
            "503",
            "500",
            "other_bad",
            "writes_acknowledged",
            "writes_lost",
            "outage_s",
            "recovery_s",
        ]
        print("| " + " | ".join(columns) + " |")
        print("| " + " | ".join("---" for _ in columns) + " |")
        for row in results:
            print("| " + " | ".join(str(row[c]) for c in columns) + " |")
        print(json.dumps(results, indent=2), file=sys.stderr)
        if any(r["500"] or r["other_bad"] or r["writes_lost"] for r in results):
            raise CommandFailure("a fault gave a 500 or another bad answer, or lost a write")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open-loop load at a constant rate: every request has an intended send time, and its
latency is measured from that time, so a stalled server cannot hide the queue it causes
(no coordinated omission). Runs as its own process until SIGTERM; one JSON line per
request: [intended, done, kind, status] (monotonic seconds; status -1 = transport error).

    python -m devtools.rehearse.loadgen --url URL --rate 50 --plan plan.json --out out.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

# Share of each request kind in the mix (writes are a trickle).
MIX = (
    ("get", 0.45),
    ("list", 0.15),
    ("search", 0.05),
    ("subdivisions", 0.25),
    ("patch", 0.04),
    ("create", 0.03),
    ("delete", 0.03),
)
TIMEOUT = 30.0


@dataclass
class Plan:
    """What the requests address: existing codes, and free codes that writes create."""

    codes: list[str]
    free: list[tuple[str, str]]
    api_key: str
    created: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Plan:
        data = json.loads(path.read_text())
        return cls(data["codes"], [tuple(p) for p in data["free"]], data["api_key"])


def request_for(kind: str, plan: Plan, rng: random.Random) -> tuple[str, str, dict | None] | None:
    """(method, path, json body) of one request of `kind`; None when it cannot be made now."""
    code = rng.choice(plan.codes)
    if kind == "get":
        return "GET", f"/country/{code}", None
    if kind == "list":
        return "GET", f"/country?limit=50&offset={rng.randrange(len(plan.codes))}", None
    if kind == "search":
        return "GET", f"/country?q={code[0]}&limit=20", None
    if kind == "subdivisions":
        return "GET", f"/country/{code}/subdivisions?limit=50", None
    if kind == "patch":
        return "PATCH", f"/country/{code}", {"official_name": f"Rehearsal {rng.randrange(10**6)}"}
    if kind == "create" and plan.free:
        alpha2, alpha3 = plan.free.pop()
        plan.created.append((alpha2, alpha3))
        return "POST", "/country", {"alpha2": alpha2, "alpha3": alpha3, "name": "Rehearsal"}
    if kind == "delete" and plan.created:
        alpha2, alpha3 = plan.created.pop(0)
        plan.free.insert(0, (alpha2, alpha3))
        return "DELETE", f"/country/{alpha2}", None
    return None


async def send(
    client: httpx.AsyncClient, kind: str, req: tuple, intended: float, out: IO[str]
) -> None:
    method, path, body = req
    try:
        response = await client.request(method, path, json=body)
        status = response.status_code
    except httpx.HTTPError:
        status = -1
    out.write(json.dumps([intended, time.monotonic(), kind, status]) + "\n")


async def run(url: str, rate: float, plan: Plan, out: IO[str], seed: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rng = random.Random(seed)  # noqa: S311 - a request mix, not a secret
    kinds, weights = zip(*MIX, strict=True)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    headers = {"X-API-Key": plan.api_key}
    tasks: set[asyncio.Task] = set()
    async with httpx.AsyncClient(
        base_url=url, timeout=TIMEOUT, limits=limits, headers=headers
    ) as client:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            intended = start + n / rate
            n += 1
            delay = intended - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            kind = rng.choices(kinds, weights)[0]
            req = request_for(kind, plan, rng)
            if req is None:
                continue
            task = asyncio.create_task(send(client, kind, req, intended, out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.rehearse.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with args.out.open("w", buffering=1) as out:
        asyncio.run(run(args.url, args.rate, Plan.load(args.plan), out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())

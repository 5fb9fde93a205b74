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
    alpha3: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alpha3 = dict(self.free)

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
    if kind == "create" and plan.free:  # back to `free` or on to `created` when answered
        alpha2, alpha3 = plan.free.pop()
        body = {"alpha2": alpha2, "alpha3": alpha3, "name": "Rehearsal"}
        return "POST", "/country", body
    if kind == "delete" and plan.created:  # only countries whose creation was answered
        alpha2, _ = plan.created[0]
        plan.created.pop(0)
        return "DELETE", f"/country/{alpha2}", None
    return None


def settle(plan: Plan, method: str, path: str, body: dict | None, status: int) -> None:
    """Return a write's code to the pool it belongs to once its answer is known."""
    if method == "POST" and body is not None:
        pair = (body["alpha2"], body["alpha3"])
        (plan.created if status == 201 else plan.free).append(pair)
    elif method == "DELETE":
        alpha2 = path.rsplit("/", 1)[-1]
        pair = (alpha2, plan.alpha3[alpha2])
        (plan.free if status in (204, 404) else plan.created).append(pair)


async def send(
    client: httpx.AsyncClient, plan: Plan, kind: str, req: tuple, intended: float, out: IO[str]
) -> None:
    method, path, body = req
    try:
        response = await client.request(method, path, json=body)
        status = response.status_code
    except httpx.HTTPError as exc:
        status = -1
        print(f"{kind} {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    out.write(json.dumps([intended, time.monotonic(), kind, status]) + "\n")
    settle(plan, method, path, body, status)


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
    # One connection pool per kind: a kind that this schema cannot serve yet (its 500s
    # close connections) does not disturb the connections of the others.
    clients = {
        kind: httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits, headers=headers)
        for kind in kinds
    }
    try:
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
            task = asyncio.create_task(send(clients[kind], plan, kind, req, intended, out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT)
    finally:
        for client in clients.values():
            await client.aclose()
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

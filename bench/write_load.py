"""The write cycle's load (bench/writes.lua): its free codes, the check every server passes
before it, and the rows it leaves behind, deleted between loads."""

import json
import string
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg2

from bench.ceiling_app import dsn
from src.cli import CommandFailure

STATUSES = [201, 204, 204]  # POST, PATCH, DELETE
QUIET_PASSES, QUIET_PASS_S, CLEAN_TIMEOUT_S = 2, 0.25, 30.0


def connect(database_url: str) -> Any:
    conn = psycopg2.connect(dsn(database_url))
    conn.autocommit = True
    return conn


def free_codes(alpha2: set[str], alpha3: set[str]) -> list[str]:
    """Alpha-2 codes no country has, nor its alpha-3 (the code and X): for the cycles."""
    letters = string.ascii_uppercase
    pairs = (a + b for a in letters for b in letters)
    return [code for code in pairs if code not in alpha2 and code + "X" not in alpha3]


def query_free_codes(database_url: str) -> list[str]:
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT alpha2, alpha3 FROM country")
            rows = cur.fetchall()
    finally:
        conn.close()
    return free_codes({row[0] for row in rows}, {row[1] for row in rows})


def http_send(
    method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str]
) -> tuple[int, bytes, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return (
                response.status,
                response.read(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


@dataclass(frozen=True)
class WriteCycle:
    """The cycle's database, API key and free codes: wrk's arguments, the check before a
    server's first write load and the cleaning after each load."""

    database_url: str
    api_key: str
    codes: list[str]

    def fits(self, connections: int, threads: int) -> bool:
        """Whether every connection can hold a code of its thread's share at once."""
        return len(self.codes) // threads > -(-connections // threads)

    def wrk_args(self, threads: int) -> list[str]:
        """bench/writes.lua's arguments: each of the `threads` takes every threads-th code."""
        return [self.api_key, str(threads), *self.codes]

    def check(self, url: str, reference: dict[str, Any], target: str) -> None:
        """One cycle before the load: the statuses every server must give, and the POST's
        body (but its created_at) as the first server gave it."""
        code = self.codes[-1]
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        new = {"alpha2": code.lower(), "alpha3": f" {code}X", "name": f"Bench {code}"}
        posted, body, got = http_send("POST", f"{url}/country", new, headers)
        conditional = {**headers, "If-Match": got.get("etag", "")}
        change = {"name": f"Bench {code} (changed)", "numeric": "999"}
        patched = http_send("PATCH", f"{url}/country/{code}", change, conditional)[0]
        deleted = http_send("DELETE", f"{url}/country/{code}", None, headers)[0]
        created = json.loads(body) if posted == 201 else {}
        created.pop("created_at", None)
        seen = {"statuses": [posted, patched, deleted], "created": created}
        if seen["statuses"] != STATUSES:
            raise CommandFailure(f"{target} answered the write cycle {seen['statuses']}")
        if reference.setdefault("writes", seen) != seen:
            raise CommandFailure(f"{target} answers the write cycle unlike the others: {seen}")

    def clean(self) -> None:
        """Delete the rows of cycles a load's end cut, until QUIET_PASSES passes in a row
        find none (the server still finishes requests wrk sent before it stopped), then
        VACUUM: every load reads and writes the table as the one before it found it."""
        conn = connect(self.database_url)
        deadline, quiet = time.monotonic() + CLEAN_TIMEOUT_S, 0
        try:
            with conn.cursor() as cur:
                while quiet < QUIET_PASSES:
                    if time.monotonic() > deadline:
                        raise CommandFailure("the server kept writing after its load ended")
                    time.sleep(QUIET_PASS_S)
                    cur.execute("DELETE FROM country WHERE alpha2 = ANY(%s)", (self.codes,))
                    quiet = quiet + 1 if cur.rowcount == 0 else 0
                cur.execute("VACUUM country")
        finally:
            conn.close()

"""`pipenv run bench`: the real app against a raw ceiling, side by side, under wrk.

1. Starts a throwaway embedded PostgreSQL (free port, temp folder) and migrates it with
   the project's own runner (src.migrations.upgrade), so it holds the real schema and ISO data.
2. For each worker count, each round: serves the ceiling (bench/ceiling_app.py: Starlette
   + asyncpg), the floor (bench/floor_app.py: the real FastAPI app with its two lists and
   gets on raw asyncpg) and the real app (src.main:app), one after the other (the order
   reverses between rounds), with identical uvicorn settings; checks all give the same
   bodies; then loads each with wrk on what it serves (SERVES), each load after a short
   discarded warm-up: `GET /country/{code}` (random alpha-2 codes, bench/paths.lua),
   `GET /country?limit=50`, `GET /country?q=<text>` (SEARCHES at random) and the write
   cycle POST → PATCH → DELETE (bench/writes.lua, the ceiling's being the write ceiling,
   bench/write_ceiling.py; rows it leaves are deleted after each load).
   Servers for the response cache (docs/cache.md): "cached" is the app with
   CACHE_ENABLED=true ("app" runs with it off, so the database path stays measured),
   "web" (bench/web_ceiling_app.py) the same FastAPI app answering from a constant dict,
   "raw" (bench/raw_web_app.py) a bare ASGI callable answering the same bytes and headers,
   the web limit, and "cached-nolog" the cached app without its access lines.
   Also, in the same rounds: the app with its access lines off (app-nolog; every other
   server logs JSON lines as the image does), and the app as shipped, `python -m
   src.serve` (served; its bounded HTTP protocol, one process, so 1 worker only).
3. Prints the median over the rounds of req/s, p50 and p99 and the ratios app/ceiling
   (the goals), floor/ceiling (what FastAPI costs) and app/floor (what SQLAlchemy costs),
   the cached app against the ceilings and the raw web limit (with the access line's cost
   on the hit path), the app's writes against the write ceiling, access logging on/off
   (goal: at least 0.90x) and served/app (what the edge costs), and writes everything
   (every round, the machine, the versions) to bench/results.json.

Not a test: nothing here asserts timings. The server, PostgreSQL and wrk share the
machine, so absolute numbers say little; the ratio measured side by side is the point.

    pipenv run bench                                  # 15 s x 3 rounds, 1 and 2 workers (~12 min)
    pipenv run bench --duration 5 --rounds 1 --workers 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg2

from bench.write_load import WriteCycle, query_free_codes
from devtools.embedded_pg import EmbeddedPostgres, env_for_url, free_port, throwaway
from src import logs, migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "paths.lua"
WRITES_SCRIPT = BENCH_DIR / "writes.lua"
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
WRK_MISSING = (
    "wrk is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS), "
    "or build https://github.com/wg/wrk"
)

# In this order in odd rounds, reversed in even ones: each pair compared runs back to back.
TARGETS = {
    # The ceiling: the app's reads and writes on Starlette + asyncpg.
    "ceiling": "bench.ceiling_app:app",
    "floor": "bench.floor_app:app",
    "app": "src.main:app",
    # The same app with its access lines off: what logging costs, side by side.
    "app-nolog": "src.main:app",
    # The app as shipped: `python -m src.serve` (bounded HTTP protocol; one process).
    "served": "src.serve",
    # The response cache (src/kit/cache.py): its bounds, the same FastAPI app answering from
    # a constant dict and a bare ASGI callable answering the same bytes (the web limit);
    # the app with CACHE_ENABLED=true, access lines on and off. "app" runs with it off.
    "web": "bench.web_ceiling_app:app",
    "raw": "bench.raw_web_app:app",
    "cached": "src.main:app",
    "cached-nolog": "src.main:app",
}
# Everything logs as the image does (JSON, one access line per request) but the -nolog ones.
LOG_ENV = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
NO_ACCESS_LINES = {"LOG_LEVEL": "WARNING"}
TARGET_ENV = {
    "cached": {"CACHE_ENABLED": "true"},
    "cached-nolog": {"CACHE_ENABLED": "true", **NO_ACCESS_LINES},
    "app-nolog": NO_ACCESS_LINES,
}
LOGGING_GOAL = 0.90  # access logging may cost at most 10% of throughput
# How the app's JSON access lines name their logger.
ACCESS_LOGGER = f'"{logs.ACCESS_LOGGER}"'
# The cached app against the database-path ceiling and the web ceiling (docs/cache.md).
CACHE_GOALS = {"get": (1.2, 0.8), "list": (1.0, None)}
CACHE_P99_GOAL_MS = 20.0
# The cached GET against the raw web limit, access line on (issue 25), and its line's cost.
HIT_GOAL, HIT_P99_GOAL_MS = 0.5, 10.0
ENDPOINTS = {
    "get": "GET /country/{code}",
    "list": "GET /country?limit=50",
    "search": "GET /country?q=<text>",
    "writes": "POST, PATCH, DELETE /country",
}
LIST_PATH = "/country?limit=50"
# Searched at random: a few rows to over a page (a `next` link), as the trigram index finds.
SEARCHES = ("land", "united", "guinea", "republic", "saint", "ia", "an", "stan")
# What each server is loaded with: what it serves, and what a table compares it on.
SERVES = {
    "ceiling": ("get", "list", "search", "writes"),
    "floor": ("get", "list"),
    "app": ("get", "list", "search", "writes"),
    "app-nolog": ("get", "list"),
    "served": ("get", "list"),
    "web": ("get", "list"),
    "raw": ("get",),
    "cached": ("get", "list"),
    "cached-nolog": ("get",),
    "baseline": ("get", "list"),
}


@dataclass(frozen=True)
class Goal:
    """The app against the ceiling: at least `ratio`, p99 at most `p99_ms` (None: any)."""

    ratio: float
    p99_ms: float | None


GOALS = {
    "get": Goal(0.6, 20.0),  # issue 25: at c=64
    "list": Goal(0.5, 50.0),
    "search": Goal(0.5, None),
    "writes": Goal(0.5, None),  # and no answer outside 2xx
}
# Identical for both servers. The log level only matters for warnings (none expected).
UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
)
# Every load's results, by worker count, endpoint and server: one dict per round.
Raw = dict[tuple[int, str, str], list[dict]]
# Every server must answer these identically (same query, same JSON) before being loaded.
BODY_PATHS = {
    "get": ("/country/GB", "/country/gbr"),
    "list": (LIST_PATH, "/country?limit=5&offset=245", "/country?limit=5&offset=1000"),
    "search": ("/country?q=land", "/country?q=an&limit=5", "/country?q=Zzzz"),
}
SAME_BODY_PATHS = (*BODY_PATHS["get"], *BODY_PATHS["list"])


# --- the database --------------------------------------------------------------------


def server_env(pg: EmbeddedPostgres, pool_size: int, max_overflow: int) -> dict[str, str]:
    """The environment every server reads its settings from.

    The pool is set explicitly (not from a local .env) so that runs compare; the ceiling
    sizes its asyncpg pool like the app's: it may open DB_POOL_SIZE + DB_MAX_OVERFLOW.
    """
    return {
        **env_for_url(pg.url),
        "ENVIRONMENT": "test",
        "API_KEY": secrets.token_urlsafe(24),
        "DB_POOL_SIZE": str(pool_size),
        "DB_MAX_OVERFLOW": str(max_overflow),
        "CACHE_ENABLED": "false",  # the uncached path; TARGET_ENV turns it on for "cached"
        **LOG_ENV,
    }


def query_database(pg: EmbeddedPostgres) -> tuple[str, list[str]]:
    """PostgreSQL's version and every alpha-2 code in the migrated data."""
    conn = psycopg2.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.database
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
            cur.execute("SELECT alpha2 FROM country ORDER BY alpha2")
            codes = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    return version, codes


# --- the servers ---------------------------------------------------------------------


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """`uvicorn <target>` on a free port, as its own process group; stopped on exit."""

    target: str
    workers: int
    env: dict[str, str]
    log_path: Path
    cwd: Path = PROJECT_ROOT  # --baseline serves src.main:app from another checkout
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.port = free_port()
        env = {**os.environ, **self.env, **TARGET_ENV.get(self.target, {})}
        if self.target == "served":  # its server options come from settings only
            command = [sys.executable, "-m", TARGETS["served"]]
            env.update(API_HOST="127.0.0.1", API_PORT=str(self.port))
        else:
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                TARGETS.get(self.target, TARGETS["app"]),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                *UVICORN_FLAGS,
            ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                command,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise CommandFailure(f"{self.target} server exited: {' '.join(tail)}")
            try:
                if http_get(self.url + "/country/GB", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise CommandFailure(f"{self.target} server not ready after {timeout:g}s")

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# --- the load ------------------------------------------------------------------------


@dataclass
class Load:
    wrk: str
    threads: int
    connections: int

    def run(
        self, url: str, paths: list[str], seconds: float, script: Path = WRK_SCRIPT
    ) -> dict[str, float]:
        """`paths` are the script's arguments (bench/writes.lua's are not paths)."""
        command = [
            self.wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds:g}s",
            "-s",
            str(script),
            url,
            "--",
            *paths,
        ]
        proc = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        line = next(
            (line for line in proc.stdout.splitlines() if line.startswith("BENCH-RESULT ")), None
        )
        if proc.returncode != 0 or line is None:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise CommandFailure(f"wrk failed on {url}: {' '.join(detail) or proc.returncode}")
        raw = json.loads(line.removeprefix("BENCH-RESULT "))
        result = {
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
            "requests": raw["requests"],
            # wrk counts status >= 400 here; these endpoints never answer 3xx without
            # If-None-Match, so this is the count of non-2xx answers (bench/writes.lua
            # counts every answer outside 2xx itself).
            "non_2xx": raw["non_2xx_3xx"],
            "socket_errors": raw["socket_errors"],
        }
        if "cycles" in raw:  # bench/writes.lua: POST → PATCH → DELETE cycles completed
            result["cycles_per_s"] = raw["cycles"] / (raw["duration_us"] / 1e6)
            result["unattributed"] = raw["unattributed"]
        return result


@dataclass(frozen=True)
class Workload:
    """One endpoint's load: a wrk script and its arguments; the write cycle's is checked
    before a server is loaded and its rows deleted after each load."""

    args: list[str]
    script: Path = WRK_SCRIPT
    cycle: WriteCycle | None = None

    def run(self, load: Load, url: str, seconds: float) -> dict[str, float]:
        try:
            return load.run(url, self.args, seconds, self.script)
        finally:
            if self.cycle is not None:
                self.cycle.clean()


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    first = (proc.stdout or proc.stderr).strip().splitlines()[:1]
    return first[0].split(" Copyright")[0] if first else "unknown"


def machine(pg_version: str, wrk: str) -> dict[str, Any]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    packages = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "uvicorn", "uvloop", "orjson")
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "wrk": wrk_version(wrk),
        "packages": {name: metadata.version(name) for name in packages},
    }


# --- the profile ---------------------------------------------------------------------


def package_of(frame: str) -> str:
    """`func (/full/path.py:line)` → where that code comes from: a package, the app, the
    standard library, the event loop (uvloop's C loop, I/O system calls), or native code
    py-spy saw no Python frame for (a process/thread root as the leaf)."""
    function, _, path = frame.rpartition(" (")
    if not function or frame.startswith(("process ", "thread ")):
        return "native (no Python frame)"
    if function == "Runner.run":  # asyncio.run → uvloop's run_forever, in C
        return "event loop (uvloop, I/O)"
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(PROJECT_ROOT)):
        return "app (src/)"
    return "stdlib"


def summarise_profile(folded: dict[str, int]) -> dict[str, Any]:
    """Self time by package and the functions with the most self time, from py-spy's
    folded stacks (the leaf frame is where the time went; C code run by a Python frame,
    e.g. asyncpg's Cython protocol or a greenlet switch, counts as that frame's)."""
    total = sum(folded.values()) or 1
    by_package: dict[str, int] = {}
    by_function: dict[str, int] = {}
    for stack, count in folded.items():
        leaf = stack.rpartition(";")[2].strip()
        package = package_of(leaf)
        by_package[package] = by_package.get(package, 0) + count
        if not package.startswith("native"):
            name = leaf.replace(f"{PROJECT_ROOT}/", "").replace("/.venv/lib/", "/")
            name = re.sub(r"\(.*/site-packages/", "(", name)
            by_function[name] = by_function.get(name, 0) + count

    def share(counts: dict[str, int], n: int) -> dict[str, float]:
        top = sorted(counts.items(), key=lambda item: -item[1])[:n]
        return {name: round(100 * count / total, 1) for name, count in top}

    return {
        "samples": total,
        "self_percent_by_package": share(by_package, 20),
        "self_percent_top_functions": share(by_function, 15),
        "folded": folded,
    }


def profile_app(
    args: argparse.Namespace,
    load: Load,
    env: dict[str, str],
    workloads: dict[str, Workload],
    logs: Path,
) -> dict[str, Any]:
    """py-spy on the app under the same loads, after (and not counted in) the rounds."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise CommandFailure("py-spy is not installed: pipenv run setup (it is a dev package)")
    profiles = {}
    workers = args.workers[0]
    with Server("app", workers, env, logs / "app-profile.log") as server:
        for endpoint in (endpoint for endpoint in SERVES["app"] if endpoint in workloads):
            workload = workloads[endpoint]
            workload.run(load, server.url, max(args.warmup, 1))
            out = logs / f"profile-{endpoint}.txt"
            seconds = max(int(args.duration) - 1, 1)
            command = [py_spy, "record", "--pid", str(server.proc.pid), "--subprocesses"]
            command += ["--rate", "250", "--duration", str(seconds), "--nonblocking"]
            command += ["--full-filenames", "--format", "raw", "--output", str(out)]
            sampler = subprocess.Popen(  # noqa: S603
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            workload.run(load, server.url, args.duration)
            _, err = sampler.communicate(timeout=60)
            if sampler.returncode != 0 or not out.exists():
                detail = err.strip().splitlines()[-1:] or [str(sampler.returncode)]
                raise CommandFailure(f"py-spy failed (it needs ptrace rights): {detail[0]}")
            folded: dict[str, int] = {}
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if count.isdigit():
                    folded[stack] = folded.get(stack, 0) + int(count)
            profiles[endpoint] = {"workers": workers, **summarise_profile(folded)}
    return profiles


def profile_report(profiles: dict[str, Any]) -> str:
    lines = []
    for endpoint, profile in profiles.items():
        lines.append(
            f"\nWhere the app's CPU time goes, {ENDPOINTS[endpoint]} "
            f"({profile['samples']} py-spy samples, self time):"
        )
        packages = profile["self_percent_by_package"].items()
        lines.append("  " + ", ".join(f"{name} {share}%" for name, share in packages))
        for function, share in list(profile["self_percent_top_functions"].items())[:8]:
            lines.append(f"  {share:5.1f}%  {function}")
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    median = {
        "rps": statistics.median(r["rps"] for r in rounds),
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "socket_errors": sum(r["socket_errors"] for r in rounds),
    }
    if "cycles_per_s" in rounds[0]:
        median["cycles_per_s"] = statistics.median(r["cycles_per_s"] for r in rounds)
        median["unattributed"] = sum(r["unattributed"] for r in rounds)
    return median


def per_round(raw: Raw, workers: int, endpoint: str, base: str, other: str) -> list[float]:
    """other / base in each round: servers of a round ran back to back, so their ratio
    shrugs off slow drift."""
    pairs = zip(raw[workers, endpoint, base], raw[workers, endpoint, other], strict=True)
    return [round(o["rps"] / b["rps"], 3) if b["rps"] else 0.0 for b, o in pairs]


def errors_of(result: dict[str, float]) -> int:
    return int(result["non_2xx"] + result["socket_errors"] + result.get("unattributed", 0))


@contextmanager
def baseline_checkout(ref: str | None, logs: Path) -> Iterator[Path | None]:
    """`git worktree` of `ref` (a commit, a branch): its app is served as "baseline"."""
    if ref is None:
        yield None
        return
    where = logs / "baseline"
    proc = subprocess.run(  # noqa: S603
        ["git", "-C", str(PROJECT_ROOT), "worktree", "add", "--detach", str(where), ref],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [str(proc.returncode)]
        raise CommandFailure(f"--baseline {ref}: git worktree failed: {detail[0]}")
    try:
        yield where
    finally:
        subprocess.run(  # noqa: S603
            ["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force", str(where)],  # noqa: S607
            capture_output=True,
            check=False,
        )


def baseline_table(raw: Raw, ref: str) -> str:
    """The app and the baseline checkout, each against the ceiling of the same rounds."""
    lines = [
        f"| workers | endpoint | baseline ({ref}) / ceiling | app / ceiling | app / baseline |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for workers, endpoint, target in sorted(raw):
        if target != "baseline":
            continue
        ceiling = median_of(raw[workers, endpoint, "ceiling"])["rps"]
        base = median_of(raw[workers, endpoint, "baseline"])["rps"]
        app = median_of(raw[workers, endpoint, "app"])["rps"]
        lines.append(
            f"| {workers} | `{ENDPOINTS[endpoint]}` | {base / ceiling:.2f}x | {app / ceiling:.2f}x "
            f"| {app / base:.2f}x |"
        )
    return "\n".join(lines)


def summarise(raw: Raw) -> list[dict[str, Any]]:
    """The app against the ceiling (and the floor, where it serves the endpoint)."""
    rows = []
    for workers in sorted({key[0] for key in raw}):
        for endpoint in ENDPOINTS:
            if (workers, endpoint, "app") not in raw or (workers, endpoint, "ceiling") not in raw:
                continue
            app = median_of(raw[workers, endpoint, "app"])
            ceiling = median_of(raw[workers, endpoint, "ceiling"])
            floor_rounds = raw.get((workers, endpoint, "floor"))
            floor = median_of(floor_rounds) if floor_rounds else None
            ratio = app["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0
            goal = GOALS[endpoint]
            row = {
                "workers": workers,
                "endpoint": ENDPOINTS[endpoint],
                "workload": endpoint,
                "app": app,
                "floor": floor,
                "ceiling": ceiling,
                "ratio": ratio,
                "floor_ratio": floor["rps"] / ceiling["rps"] if floor and ceiling["rps"] else None,
                "app_to_floor": app["rps"] / floor["rps"] if floor and floor["rps"] else None,
                "ratio_per_round": per_round(raw, workers, endpoint, "ceiling", "app"),
                "goal": goal.ratio,
                "p99_goal_ms": goal.p99_ms,
            }
            row["goal_met"] = verdict(row) == "met"
            rows.append(row)
    return rows


def cache_table(raw: Raw) -> str:
    """The cached app against both ceilings, measured in the same rounds."""
    lines = [
        "| workers | endpoint | cached req/s | cached p99 | web ceiling req/s | cached / ceiling "
        "| cached / web ceiling | uncached app / ceiling | cached non-2xx + errors | goal |",
        "| ---: | --- |" + " ---: |" * 7 + " --- |",
    ]
    for workers in sorted({key[0] for key in raw}):
        for endpoint in ENDPOINTS:
            if (workers, endpoint, "cached") not in raw:
                continue
            cached, web, ceiling, app = (
                median_of(raw[workers, endpoint, t]) for t in ("cached", "web", "ceiling", "app")
            )
            to_ceiling, to_web = cached["rps"] / ceiling["rps"], cached["rps"] / web["rps"]
            floor_ceiling, floor_web = CACHE_GOALS[endpoint]
            errors = cached["non_2xx"] + cached["socket_errors"]
            missed = [
                name
                for name, ok in (
                    (f"< {floor_ceiling}x ceiling", to_ceiling >= floor_ceiling),
                    (f"< {floor_web}x web", floor_web is None or to_web >= floor_web),
                    (
                        f"p99 ≥ {CACHE_P99_GOAL_MS:g} ms",
                        endpoint != "get" or cached["p99_ms"] < CACHE_P99_GOAL_MS,
                    ),
                    ("errors", errors == 0),
                )
                if not ok
            ]
            lines.append(
                f"| {workers} | `{ENDPOINTS[endpoint]}` | {cached['rps']:,.0f} "
                f"| {cached['p99_ms']:.1f} ms | {web['rps']:,.0f} | **{to_ceiling:.2f}x** "
                f"| **{to_web:.2f}x** | {app['rps'] / ceiling['rps']:.2f}x | {errors} "
                f"| {'met' if not missed else 'missed: ' + ', '.join(missed)} |"
            )
    return "\n".join(lines)


def missed(checks: list[tuple[str, bool]]) -> str:
    """A goal's verdict: met, or the names of the checks that failed."""
    failed = [name for name, ok in checks if not ok]
    return "met" if not failed else "missed: " + ", ".join(failed)


def hit_table(raw: Raw) -> tuple[str, list[dict[str, Any]]]:
    """The cached `GET /country/{code}` against the raw web limit (bench/raw_web_app.py), with
    its access line (cached) and without (cached-nolog), in the same rounds: the hit path's
    share of the web limit and what its access line costs."""
    lines = [
        "| workers | endpoint | raw req/s | raw p99 | cached req/s | cached p99 | cached / raw "
        "| no line req/s | no line p99 | no line / raw | access line on / off "
        "| on / off per round | non-2xx + errors | goal |",
        "| ---: | --- |" + " ---: |" * 11 + " --- |",
    ]
    rows = []
    for workers in sorted({key[0] for key in raw}):
        endpoint = "get"
        if not all((workers, endpoint, t) in raw for t in ("raw", "cached", "cached-nolog")):
            continue
        limit, cached, nolog = (
            median_of(raw[workers, endpoint, t]) for t in ("raw", "cached", "cached-nolog")
        )
        to_raw, nolog_to_raw = cached["rps"] / limit["rps"], nolog["rps"] / limit["rps"]
        on_off = cached["rps"] / nolog["rps"]
        rounds = per_round(raw, workers, endpoint, "cached-nolog", "cached")
        errors = errors_of(cached) + errors_of(nolog)
        row = {
            "workers": workers,
            "endpoint": ENDPOINTS[endpoint],
            "raw": limit,
            "cached": cached,
            "cached-nolog": nolog,
            "ratio": to_raw,
            "nolog_ratio": nolog_to_raw,
            "on_off": on_off,
            "on_off_per_round": rounds,
            "goal": HIT_GOAL,
            "p99_goal_ms": HIT_P99_GOAL_MS,
            "on_off_goal": LOGGING_GOAL,
            "verdict": missed(
                [
                    (f"< {HIT_GOAL}x raw", to_raw >= HIT_GOAL),
                    (f"p99 > {HIT_P99_GOAL_MS:g} ms", cached["p99_ms"] <= HIT_P99_GOAL_MS),
                    (f"access line on / off < {LOGGING_GOAL:.2f}", on_off >= LOGGING_GOAL),
                    ("errors", errors == 0),
                ]
            ),
        }
        row["goal_met"] = row["verdict"] == "met"
        rows.append(row)
        lines.append(
            f"| {workers} | `{ENDPOINTS[endpoint]}` | {limit['rps']:,.0f} "
            f"| {limit['p99_ms']:.1f} ms | {cached['rps']:,.0f} | {cached['p99_ms']:.1f} ms "
            f"| **{to_raw:.2f}x** | {nolog['rps']:,.0f} | {nolog['p99_ms']:.1f} ms "
            f"| {nolog_to_raw:.2f}x "
            f"| **{on_off:.2f}x** | {', '.join(f'{r:.2f}' for r in rounds)} | {errors} "
            f"| {row['verdict']} |"
        )
    return "\n".join(lines), rows


def writes_table(rows: list[dict[str, Any]]) -> str:
    """The app's write cycle against the write ceiling: requests (each a POST, PATCH or
    DELETE) and whole cycles per second, latencies, and every answer outside 2xx."""
    lines = [
        "| workers | app req/s | app cycles/s | app p50 / p99 | write ceiling req/s "
        "| write ceiling p50 / p99 | app / write ceiling | per round "
        "| app non-2xx + errors | write ceiling non-2xx + errors | goal |",
        "| ---: |" + " ---: |" * 9 + " --- |",
    ]
    for row in rows:
        if row["workload"] != "writes":
            continue
        app, ceiling = row["app"], row["ceiling"]
        lines.append(
            f"| {row['workers']} | {app['rps']:,.0f} | {app['cycles_per_s']:,.0f} "
            f"| {app['p50_ms']:.1f} / {app['p99_ms']:.1f} ms | {ceiling['rps']:,.0f} "
            f"| {ceiling['p50_ms']:.1f} / {ceiling['p99_ms']:.1f} ms | **{row['ratio']:.2f}x** "
            f"| {', '.join(f'{r:.2f}' for r in row['ratio_per_round'])} | {errors_of(app)} "
            f"| {errors_of(ceiling)} | {verdict(row)} |"
        )
    return "\n".join(lines)


def paired_table(
    raw: Raw,
    name: str,
    base: str,
    other: str,
    goal: float | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """`other` against `base`, served back to back in the same rounds: req/s and the ratio."""
    lines = [
        f"| workers | endpoint | {base} req/s | {other} req/s | {name} | per round "
        f"| {base} p99 | {other} p99 |" + (f" goal ≥ {goal:.2f} |" if goal else ""),
        "| ---: | --- |" + " ---: |" * 6 + (" --- |" if goal else ""),
    ]
    rows = []
    for workers, endpoint, target in sorted(raw):
        if target != other or (workers, endpoint, base) not in raw:
            continue
        b, o = raw[workers, endpoint, base], raw[workers, endpoint, other]
        mb, mo = median_of(b), median_of(o)
        ratio = mo["rps"] / mb["rps"] if mb["rps"] else 0.0
        per_round = [round(y["rps"] / x["rps"], 3) for x, y in zip(b, o, strict=True)]
        rows.append(
            {
                "workers": workers,
                "endpoint": ENDPOINTS[endpoint],
                base: mb,
                other: mo,
                "ratio": ratio,
                "ratio_per_round": per_round,
            }
        )
        verdict_cell = f" {'met' if ratio >= goal else 'missed'} |" if goal else ""
        lines.append(
            f"| {workers} | `{ENDPOINTS[endpoint]}` | {mb['rps']:,.0f} | {mo['rps']:,.0f} "
            f"| **{ratio:.2f}x** | {', '.join(f'{r:.2f}' for r in per_round)} "
            f"| {mb['p99_ms']:.1f} ms | {mo['p99_ms']:.1f} ms |" + verdict_cell
        )
    return "\n".join(lines), rows


def logging_table(raw: Raw) -> tuple[str, list[dict]]:
    """Access logging on (app) against off (app-nolog): the goal is at most 10% less."""
    return paired_table(raw, "on / off", "app-nolog", "app", LOGGING_GOAL)


def edge_table(raw: Raw) -> tuple[str, list[dict]]:
    """`python -m src.serve` (bounded protocol) against plain uvicorn httptools."""
    return paired_table(raw, "served / app", "app", "served")


def verdict(row: dict[str, Any]) -> str:
    """The app against the ceiling: ratio, p99 where the goal bounds it, no errors."""
    app, p99_goal = row["app"], row["p99_goal_ms"]
    return missed(
        [
            (f"ratio < {row['goal']}", row["ratio"] >= row["goal"]),
            (f"p99 > {p99_goal or 0:g} ms", p99_goal is None or app["p99_ms"] <= p99_goal),
            ("errors", errors_of(app) == 0),
        ]
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The reads: the app against the floor and the ceiling (writes: writes_table)."""
    lines = [
        "| workers | endpoint | app req/s | app p50 / p99 | floor req/s | floor p99 "
        "| ceiling req/s | ceiling p50 / p99 | app / ceiling | floor / ceiling | app / floor "
        "| app non-2xx + errors | goal |",
        "| ---: | --- |" + " ---: |" * 10 + " --- |",
    ]
    for row in rows:
        if row["workload"] == "writes":
            continue
        app, floor, ceiling = row["app"], row["floor"], row["ceiling"]
        floor_cells = f"{floor['rps']:,.0f} | {floor['p99_ms']:.1f} ms" if floor else "- | -"
        floor_ratios = (
            f"{row['floor_ratio']:.2f}x | {row['app_to_floor']:.2f}x" if floor else "- | -"
        )
        lines.append(
            f"| {row['workers']} | `{row['endpoint']}` | {app['rps']:,.0f} "
            f"| {app['p50_ms']:.1f} / {app['p99_ms']:.1f} ms | {floor_cells} "
            f"| {ceiling['rps']:,.0f} | {ceiling['p50_ms']:.1f} / {ceiling['p99_ms']:.1f} ms "
            f"| **{row['ratio']:.2f}x** | {floor_ratios} | {errors_of(app)} | {verdict(row)} |"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pipenv run bench",
        description="The real app against a raw Starlette + asyncpg ceiling, under wrk.",
    )
    parser.add_argument("--duration", type=positive(float), default=15, help="seconds per load")
    parser.add_argument("--rounds", type=positive(int), default=3, help="the median is reported")
    parser.add_argument("--connections", type=positive(int), default=64, help="wrk -c")
    parser.add_argument("--threads", type=positive(int), default=2, help="wrk -t")
    parser.add_argument(
        "--workers", type=positive(int), nargs="+", default=[1, 2], help="uvicorn --workers"
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="discarded seconds of load before each load"
    )
    parser.add_argument(
        "--ceiling-reset",
        choices=["asyncpg", "none"],
        default="asyncpg",
        help="the ceiling pool's reset on release: asyncpg's default query, or none",
    )
    defaults = Settings.model_fields
    parser.add_argument(
        "--pool-size",
        type=positive(int),
        default=defaults["db_pool_size"].default,
        help="DB_POOL_SIZE for the app (default: the app's default, not .env)",
    )
    parser.add_argument(
        "--max-overflow",
        type=int,
        default=defaults["db_max_overflow"].default,
        help="DB_MAX_OVERFLOW for the app (default: the app's default, not .env)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, sample the app with py-spy under each load (needs ptrace rights)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also serve src.main:app as of this commit (a git worktree), side by side",
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="instead: the app's lists at 10^3..10^6 rows, each against its 10^3 figure",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results")
    return parser.parse_args(argv)


def check_same_bodies(
    url: str, reference: dict[str, Any], target: str, endpoints: tuple[str, ...] = ("get", "list")
) -> None:
    """The bodies of BODY_PATHS for `endpoints` (the reads it serves), as every server's."""
    for path in (path for endpoint in endpoints for path in BODY_PATHS.get(endpoint, ())):
        status, body = http_get(url + path)
        if status != 200:
            raise CommandFailure(f"{target} answered {status} to GET {path}")
        answer = json.loads(body)
        if reference.setdefault(path, answer) != answer:
            raise CommandFailure(f"{target} answers GET {path} unlike the others")


def one_round(
    args: argparse.Namespace,
    load: Load,
    env: dict[str, str],
    workloads: dict[str, Workload],
    workers: int,
    round_no: int,
    logs: Path,
    reference: dict[str, Any],
    raw: Raw,
    baseline: Path | None = None,
) -> None:
    """Every server, one after the other (the order reverses between rounds)."""
    targets = [*TARGETS, *(["baseline"] if baseline else [])]
    if workers > 1:  # src.serve runs one process (replicas scale it, docs/docker.md)
        targets.remove("served")
    order = targets if round_no % 2 else list(reversed(targets))
    for target in order:
        cwd = baseline if target == "baseline" and baseline else PROJECT_ROOT
        log = logs / f"{target}.log"
        log.unlink(missing_ok=True)
        endpoints = SERVES[target]
        with Server(target, workers, env, log, cwd) as server:
            check_same_bodies(server.url, reference, target, endpoints)
            for endpoint in (endpoint for endpoint in endpoints if endpoint in workloads):
                workload = workloads[endpoint]
                if workload.cycle is not None:
                    workload.cycle.check(server.url, reference, target)
                if args.warmup > 0:
                    workload.run(load, server.url, args.warmup)
                result = workload.run(load, server.url, args.duration)
                raw.setdefault((workers, endpoint, target), []).append(result)
                print(
                    f"workers {workers}  round {round_no}/{args.rounds}  {target:<12}  "
                    f"{ENDPOINTS[endpoint]:<28} {result['rps']:>8,.0f} req/s  "
                    f"p50 {result['p50_ms']:5.1f} ms  p99 {result['p99_ms']:5.1f} ms  "
                    f"non-2xx {result['non_2xx']}  errors {result['socket_errors']}",
                    flush=True,
                )
        check_access_lines(target, log)


# The servers whose access lines a comparison is about: on (True) or off.
ACCESS_LINES = {"app": True, "app-nolog": False, "cached": True, "cached-nolog": False}


def check_access_lines(target: str, log: Path) -> None:
    """The logging comparisons hold only if app and cached log every request and their
    -nolog twins none."""
    if target not in ACCESS_LINES:
        return
    lines = sum(ACCESS_LOGGER in line for line in log.read_text(errors="replace").splitlines())
    if ACCESS_LINES[target] != (lines > 0):
        raise CommandFailure(f"{target} wrote {lines} access lines to {log}")


def bench(args: argparse.Namespace, wrk: str, base: Settings) -> dict[str, Any]:
    load = Load(wrk, args.threads, args.connections)
    raw: Raw = {}
    started = time.monotonic()
    with throwaway("country-bench-", user="bench", database="countries_bench") as pg:
        env = server_env(pg, args.pool_size, args.max_overflow)
        env["CEILING_POOL_RESET"] = args.ceiling_reset
        # The app's own 503 past its limit must not cut in under the bench's own load.
        limit = Settings.model_fields["max_concurrent_requests"].default
        env["MAX_CONCURRENT_REQUESTS"] = str(max(limit, args.connections))
        settings = base.for_database(pg.url).model_copy(
            update={"db_pool_size": args.pool_size, "db_max_overflow": args.max_overflow}
        )
        print(f"PostgreSQL on {pg.host}:{pg.port}: {migrations.upgrade(settings)}", flush=True)
        pg_version, codes = query_database(pg)
        cycle = WriteCycle(pg.url, env["API_KEY"], query_free_codes(pg.url))
        workloads = {
            "get": Workload([f"/country/{code}" for code in codes]),
            "list": Workload([LIST_PATH]),
            "search": Workload([f"/country?q={q}" for q in SEARCHES]),
            "writes": Workload(cycle.wrk_args(args.threads), WRITES_SCRIPT, cycle),
        }
        if not cycle.fits(args.connections, args.threads):
            del workloads["writes"]
            print(
                f"no write cycle: {len(cycle.codes)} free codes for {args.connections} connections"
            )
        reference: dict[str, Any] = {}
        logs = pg.data_dir.parent
        with baseline_checkout(args.baseline, logs) as baseline:
            for workers in args.workers:
                for round_no in range(1, args.rounds + 1):
                    one_round(
                        args,
                        load,
                        env,
                        workloads,
                        workers,
                        round_no,
                        logs,
                        reference,
                        raw,
                        baseline,
                    )
        profiles = profile_app(args, load, env, workloads, logs) if args.profile else {}
    summary = summarise(raw)
    return {
        "machine": machine(pg_version, wrk),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "warmup_s": args.warmup,
            "workers": args.workers,
            "uvicorn_flags": list(UVICORN_FLAGS),
            "db_pool_size": settings.db_pool_size,
            "db_max_overflow": settings.db_max_overflow,
            "db_pool_pre_ping": settings.db_pool_pre_ping,
            "ceiling_pool_reset": args.ceiling_reset,
            "elapsed_s": round(time.monotonic() - started),
        },
        "summary": summary,
        "hit_path": hit_table(raw)[1],
        "writes": [row for row in summary if row["workload"] == "writes"],
        "logging": logging_table(raw)[1],
        "edge": edge_table(raw)[1],
        "raw": raw,
        "rounds": [
            {"workers": w, "endpoint": ENDPOINTS[e], "target": t, "results": results}
            for (w, e, t), results in raw.items()
        ],
        "profile": profiles,
    }


def write_results(output: Path, results: dict[str, Any]) -> None:
    """The results as JSON at `output` (its folder made), and a line saying where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {output}")


def growth(args: argparse.Namespace, wrk: str, settings: Settings) -> int:
    from bench.growth import growth_table, run_growth  # it imports this module

    results = run_growth(args, wrk, settings)
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, one worker")
    print(growth_table(results["results"]))
    write_results(args.output.with_name(args.output.stem + "-growth.json"), results)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with fail_on_errors():
        settings = read_settings()
        wrk = shutil.which("wrk")
        if wrk is None:
            raise CommandFailure(WRK_MISSING)
        if args.growth:
            return growth(args, wrk, settings)
        results = bench(args, wrk, settings)
        raw = results.pop("raw")  # tuple keys: the JSON has them as "rounds"
        m = results["machine"]
        print()
        print(
            f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, "
            f"PostgreSQL {m['postgresql']}, {m['wrk']}; wrk -t{args.threads} "
            f"-c{args.connections} -d{args.duration:g}s, median of {args.rounds} round(s)"
        )
        print(table(results["summary"]))
        print()
        print(cache_table(raw))
        print("\nThe cached hit against the raw web limit (bench/raw_web_app.py):")
        print(hit_table(raw)[0])
        print("\nThe write cycle POST → PATCH → DELETE against the write ceiling:")
        print(writes_table(results["summary"]))
        print("\nAccess logging (JSON lines to a file) on against off:")
        print(logging_table(raw)[0])
        print("\nThe shipped server (`python -m src.serve`) against plain `uvicorn`:")
        print(edge_table(raw)[0])
        if args.baseline:
            print()
            print(baseline_table(raw, args.baseline))
        if results["profile"]:
            print(profile_report(results["profile"]))
        write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`pipenv run bench`: the real app against a raw ceiling, side by side, under wrk.

1. Starts a throwaway embedded PostgreSQL (free port, temp folder) and migrates it with
   the project's own runner (src.migrations.upgrade), so it holds the real schema and ISO data.
2. For each worker count, each round: serves the ceiling (bench/ceiling_app.py: Starlette
   + asyncpg), the floor (bench/floor_app.py: the real FastAPI app with these two reads on
   raw asyncpg) and the real app (src.main:app), one after the other (the order reverses
   between rounds), with identical uvicorn settings; checks all give the same bodies;
   then loads `GET /country/{code}` (random alpha-2 codes, bench/paths.lua) and
   `GET /country?limit=50` with wrk, each after a short discarded warm-up.
   Two more servers measure the response cache (docs/cache.md): "cached" is the app
   with CACHE_ENABLED=true ("app" runs with it off, so the database path stays
   measured) and "web" (bench/web_ceiling_app.py) the same FastAPI app answering from a
   constant dict; a second table compares them with both ceilings.
   Also, in the same rounds: the app with its access lines off (app-nolog; every other
   server logs JSON lines as the image does), and the app as shipped, `python -m
   src.serve` (served; its bounded HTTP protocol, one process, so 1 worker only).
3. Prints the median over the rounds of req/s, p50 and p99 and the ratios app/ceiling
   (the goal), floor/ceiling (what FastAPI costs) and app/floor (what SQLAlchemy costs),
   access logging on/off (goal: at least 0.90x) and served/app (what the edge costs),
   and writes everything (every round, the machine, the versions) to bench/results.json.

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

from devtools.embedded_pg import EmbeddedPostgres, env_for_url, free_port, throwaway
from src import logs, migrations
from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "paths.lua"
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
WRK_MISSING = (
    "wrk is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS), "
    "or build https://github.com/wg/wrk"
)

TARGETS = {
    "ceiling": "bench.ceiling_app:app",
    "floor": "bench.floor_app:app",
    "app": "src.main:app",
    # The response cache (src/kit/cache.py): the app with CACHE_ENABLED=true, and its bound,
    # the same FastAPI app answering from a constant dict. "app" runs with the cache off.
    "cached": "src.main:app",
    "web": "bench.web_ceiling_app:app",
    # The same app with its access lines off: what logging costs, side by side.
    "app-nolog": "src.main:app",
    # The app as shipped: `python -m src.serve` (bounded HTTP protocol; one process).
    "served": "src.serve",
}
# Everything logs as the image does (JSON, one access line per request) but app-nolog.
LOG_ENV = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
TARGET_ENV = {"cached": {"CACHE_ENABLED": "true"}, "app-nolog": {"LOG_LEVEL": "WARNING"}}
LOGGING_GOAL = 0.90  # access logging may cost at most 10% of throughput
# How the app's JSON access lines name their logger.
ACCESS_LOGGER = f'"{logs.ACCESS_LOGGER}"'
# The cached app against the database-path ceiling and the web ceiling (docs/cache.md).
CACHE_GOALS = {"get": (1.2, 0.8), "list": (1.0, None)}
CACHE_P99_GOAL_MS = 20.0
ENDPOINTS = {"get": "GET /country/{code}", "list": "GET /country?limit=50"}
LIST_PATH = "/country?limit=50"
RATIO_GOALS = {"get": 0.6, "list": 0.5}
P99_GOAL_MS = 50.0
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
# All servers must answer these identically (same query, same JSON) before being loaded.
SAME_BODY_PATHS = (
    "/country/GB",
    "/country/gbr",
    LIST_PATH,
    "/country?limit=5&offset=245",
    "/country?limit=5&offset=1000",
)


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

    def run(self, url: str, paths: list[str], seconds: float) -> dict[str, float]:
        command = [
            self.wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds:g}s",
            "-s",
            str(WRK_SCRIPT),
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
        return {
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
            "requests": raw["requests"],
            # wrk counts status >= 400 here; these endpoints never answer 3xx without
            # If-None-Match, so this is the count of non-2xx answers.
            "non_2xx": raw["non_2xx_3xx"],
            "socket_errors": raw["socket_errors"],
        }


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
    workloads: dict[str, list[str]],
    logs: Path,
) -> dict[str, Any]:
    """py-spy on the app under the same load, after (and not counted in) the rounds."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise CommandFailure("py-spy is not installed: pipenv run setup (it is a dev package)")
    profiles = {}
    workers = args.workers[0]
    with Server("app", workers, env, logs / "app-profile.log") as server:
        for endpoint, paths in workloads.items():
            load.run(server.url, paths, max(args.warmup, 1))
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
            load.run(server.url, paths, args.duration)
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
    return {
        "rps": statistics.median(r["rps"] for r in rounds),
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "socket_errors": sum(r["socket_errors"] for r in rounds),
    }


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


def baseline_table(raw: dict[tuple[int, str, str], list[dict]], ref: str) -> str:
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


def summarise(raw: dict[tuple[int, str, str], list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for workers in sorted({key[0] for key in raw}):
        for endpoint in ENDPOINTS:
            app_rounds = raw[workers, endpoint, "app"]
            ceiling_rounds = raw[workers, endpoint, "ceiling"]
            app, ceiling = median_of(app_rounds), median_of(ceiling_rounds)
            floor = median_of(raw[workers, endpoint, "floor"])
            ratio = app["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0
            # Each round's servers ran back to back: their ratio shrugs off slow drift.
            per_round = [
                a["rps"] / c["rps"] for a, c in zip(app_rounds, ceiling_rounds, strict=True)
            ]
            met = (
                ratio >= RATIO_GOALS[endpoint]
                and app["p99_ms"] < P99_GOAL_MS
                and app["non_2xx"] + app["socket_errors"] == 0
            )
            rows.append(
                {
                    "workers": workers,
                    "endpoint": ENDPOINTS[endpoint],
                    "app": app,
                    "floor": floor,
                    "ceiling": ceiling,
                    "ratio": ratio,
                    "floor_ratio": floor["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0,
                    "app_to_floor": app["rps"] / floor["rps"] if floor["rps"] else 0.0,
                    "ratio_per_round": [round(r, 3) for r in per_round],
                    "goal": RATIO_GOALS[endpoint],
                    "goal_met": met,
                }
            )
    return rows


def cache_table(raw: dict[tuple[int, str, str], list[dict]]) -> str:
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


def paired_table(
    raw: dict[tuple[int, str, str], list[dict]],
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
        if target != other:
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


def logging_table(raw: dict[tuple[int, str, str], list[dict]]) -> tuple[str, list[dict]]:
    """Access logging on (app) against off (app-nolog): the goal is at most 10% less."""
    return paired_table(raw, "on / off", "app-nolog", "app", LOGGING_GOAL)


def edge_table(raw: dict[tuple[int, str, str], list[dict]]) -> tuple[str, list[dict]]:
    """`python -m src.serve` (bounded protocol) against plain uvicorn httptools."""
    return paired_table(raw, "served / app", "app", "served")


def verdict(row: dict[str, Any]) -> str:
    app = row["app"]
    missed = [
        name
        for name, ok in (
            (f"ratio < {row['goal']}", row["ratio"] >= row["goal"]),
            (f"p99 ≥ {P99_GOAL_MS:g} ms", app["p99_ms"] < P99_GOAL_MS),
            ("errors", app["non_2xx"] + app["socket_errors"] == 0),
        )
        if not ok
    ]
    return "met" if not missed else "missed: " + ", ".join(missed)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | endpoint | app req/s | app p50 / p99 | floor req/s | floor p99 "
        "| ceiling req/s | ceiling p50 / p99 | app / ceiling | floor / ceiling | app / floor "
        "| app non-2xx + errors | goal |",
        "| ---: | --- |" + " ---: |" * 10 + " --- |",
    ]
    for row in rows:
        app, floor, ceiling = row["app"], row["floor"], row["ceiling"]
        lines.append(
            f"| {row['workers']} | `{row['endpoint']}` | {app['rps']:,.0f} "
            f"| {app['p50_ms']:.1f} / {app['p99_ms']:.1f} ms | {floor['rps']:,.0f} "
            f"| {floor['p99_ms']:.1f} ms | {ceiling['rps']:,.0f} "
            f"| {ceiling['p50_ms']:.1f} / {ceiling['p99_ms']:.1f} ms "
            f"| **{row['ratio']:.2f}x** | {row['floor_ratio']:.2f}x | {row['app_to_floor']:.2f}x "
            f"| {app['non_2xx'] + app['socket_errors']} | {verdict(row)} |"
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


def check_same_bodies(url: str, reference: dict[str, Any], target: str) -> None:
    for path in SAME_BODY_PATHS:
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
    workloads: dict[str, list[str]],
    workers: int,
    round_no: int,
    logs: Path,
    reference: dict[str, Any],
    raw: dict[tuple[int, str, str], list[dict]],
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
        with Server(target, workers, env, log, cwd) as server:
            check_same_bodies(server.url, reference, target)
            for endpoint, paths in workloads.items():
                if args.warmup > 0:
                    load.run(server.url, paths, args.warmup)
                result = load.run(server.url, paths, args.duration)
                raw.setdefault((workers, endpoint, target), []).append(result)
                print(
                    f"workers {workers}  round {round_no}/{args.rounds}  {target:<9}  "
                    f"{ENDPOINTS[endpoint]:<22} {result['rps']:>8,.0f} req/s  "
                    f"p50 {result['p50_ms']:5.1f} ms  p99 {result['p99_ms']:5.1f} ms  "
                    f"non-2xx {result['non_2xx']}  errors {result['socket_errors']}",
                    flush=True,
                )
        check_access_lines(target, log)


def check_access_lines(target: str, log: Path) -> None:
    """The logging comparison holds only if app logs every request and app-nolog none."""
    if target not in ("app", "app-nolog"):
        return
    lines = sum(ACCESS_LOGGER in line for line in log.read_text(errors="replace").splitlines())
    if (target == "app") != (lines > 0):
        raise CommandFailure(f"{target} wrote {lines} access lines to {log}")


def bench(args: argparse.Namespace, wrk: str, base: Settings) -> dict[str, Any]:
    load = Load(wrk, args.threads, args.connections)
    raw: dict[tuple[int, str, str], list[dict]] = {}
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
        workloads = {"get": [f"/country/{code}" for code in codes], "list": [LIST_PATH]}
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
        "summary": summarise(raw),
        "logging": logging_table(raw)[1],
        "edge": edge_table(raw)[1],
        "raw": raw,
        "rounds": [
            {"workers": w, "endpoint": ENDPOINTS[e], "target": t, "results": results}
            for (w, e, t), results in raw.items()
        ],
        "profile": profiles,
    }


def growth(args: argparse.Namespace, wrk: str, settings: Settings) -> int:
    from bench.growth import growth_table, run_growth  # it imports this module

    results = run_growth(args, wrk, settings)
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, one worker")
    print(growth_table(results["results"]))
    output = args.output.with_name(args.output.stem + "-growth.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {output}")
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
        print("\nAccess logging (JSON lines to a file) on against off:")
        print(logging_table(raw)[0])
        print("\nThe shipped server (`python -m src.serve`) against plain `uvicorn`:")
        print(edge_table(raw)[0])
        if args.baseline:
            print()
            print(baseline_table(raw, args.baseline))
        if results["profile"]:
            print(profile_report(results["profile"]))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

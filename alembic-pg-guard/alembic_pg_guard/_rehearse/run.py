"""`rehearse`: apply pending revisions to a big throwaway copy under steady load.

A throwaway database is migrated to a starting revision, filled with synthetic rows
(seed.py), served by the project's app under its open-loop load (both named by the
project's `rehearse_target` hook in alembic.ini: a `RehearsalTarget`); then each pending
revision is applied with the runner and judged against a budget (report.py).

    alembic-pg-guard rehearse                 # the pending revisions, 1,000,000 rows
    alembic-pg-guard rehearse --from REV      # from there to head
    alembic-pg-guard rehearse --rows 50000    # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from rich.console import Console
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from alembic_pg_guard import _runner as migrate
from alembic_pg_guard._config import SECTION, attach, hook, project_root, settings_of
from alembic_pg_guard._errors import GuardError, fail_on_errors
from alembic_pg_guard._history import db_heads
from alembic_pg_guard._rehearse import report, seed
from alembic_pg_guard._rehearse.observe import (
    LockSampler,
    LongReader,
    StatementTracer,
    dead_tuples,
    relfilenodes,
    table_rows,
    wal_position,
)
from alembic_pg_guard._rehearse.target import RehearsalTarget
from alembic_pg_guard._scratch import fresh_database, scratch_server
from alembic_pg_guard._settings import AppRole, GuardSettings

APP_ROLE = "rehearsal_app"


class RehearsalError(GuardError):
    """One line: what cannot be rehearsed, or which revision is over budget."""


@dataclass
class Args:
    start: str | None
    rows: int
    rate: float
    warmup: float
    gap: float
    budget: report.Budget
    out: Path
    long_reader: float | None  # None: from the lock timeout


def parse(argv: list[str] | None) -> Args:
    p = argparse.ArgumentParser(
        prog="alembic-pg-guard rehearse", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--from",
        dest="start",
        metavar="REV",
        help="starting revision (default: the configured database's, else the one before head)",
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the largest table")
    p.add_argument("--rate", type=float, default=50, help="requests per second (default 50)")
    p.add_argument("--warmup", type=float, default=5, help="seconds of load before revisions")
    p.add_argument("--gap", type=float, default=2, help="seconds of load between revisions")
    p.add_argument("--max-stall", type=float, default=1.0, help="budget: seconds (default 1)")
    p.add_argument("--max-errors", type=int, default=0, help="budget: errors per revision")
    p.add_argument(
        "--allow-table-locks",
        action="store_true",
        help="do not fail whole-table work under a blocking lock (stall and errors still count)",
    )
    p.add_argument(
        "--min-table-rows",
        type=int,
        default=10_000,
        help="whole-table work and rewrites count on tables of this many rows (default 10000)",
    )
    p.add_argument(
        "--max-locked-rows",
        type=int,
        default=10_000,
        help="budget: rows a transaction keeps row-locked past --max-stall (default 10000)",
    )
    p.add_argument(
        "--max-lock-wait",
        type=float,
        default=1.0,
        help="budget: seconds a request may wait behind the migration's lock attempt",
    )
    p.add_argument(
        "--long-reader",
        type=float,
        metavar="SECONDS",
        help="a reader holds ACCESS SHARE on every table this long as each revision starts "
        "(default: 3 lock timeouts, at least 2 s; 0: none)",
    )
    p.add_argument("--out", type=Path, default=Path("rehearsal"), help="report folder")
    p.add_argument(
        "--rolling",
        action="store_true",
        help="instead: the previous release and this one through a rolling deploy under load "
        "(its own options: rehearse --rolling --help)",
    )
    a = p.parse_args(argv)
    if a.rows < 1 or a.rate <= 0:
        p.error("--rows and --rate must be positive")
    budget = report.Budget(
        a.max_stall, a.max_errors, a.allow_table_locks, a.min_table_rows, a.max_locked_rows,
        a.max_lock_wait,
    )  # fmt: skip
    return Args(a.start, a.rows, a.rate, a.warmup, a.gap, budget, a.out, a.long_reader)


def long_reader_seconds(args: Args, settings: GuardSettings) -> float:
    """Longer than the lock timeout, so that a lock attempt has to wait it out."""
    if args.long_reader is not None:
        return max(args.long_reader, 0.0)
    return max(2.0, 3 * settings.lock_timeout_ms / 1000)


# --- revisions -------------------------------------------------------------------------


def configured_revision(settings: GuardSettings) -> str | None:
    """The configured database's revision, if it answers within a few seconds."""
    try:
        url = settings.sync_url
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            heads = db_heads(conn)
    except (GuardError, SQLAlchemyError):
        return None
    return next(iter(heads)) if len(heads) == 1 else None


def pending(
    script: ScriptDirectory, start: str | None, settings: GuardSettings
) -> tuple[str, list]:
    """The starting revision and the revisions after it, oldest first."""
    heads = script.get_heads()
    if len(heads) != 1:
        raise RehearsalError(f"the history has {len(heads)} heads: merge them first")
    head = script.get_revision(heads[0])
    if start is None:
        start = configured_revision(settings)
        if start is None or start == head.revision:
            down = head.down_revision
            if not isinstance(down, str):
                raise RehearsalError("head has no single previous revision: give --from REV")
            start = down
    try:
        rev = script.get_revision(start)
    except Exception as exc:  # alembic raises several kinds for unknown/ambiguous ids
        raise RehearsalError(f"--from {start}: {exc}") from None
    if rev is None:
        raise RehearsalError(f"--from {start}: not a revision of this history")
    todo = list(reversed(list(script.iterate_revisions(head.revision, rev.revision))))
    todo = [r for r in todo if r.revision != rev.revision]
    if not todo:
        raise RehearsalError(f"nothing to rehearse: {rev.revision} is head")
    return rev.revision, todo


# --- the app and the load --------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def target_of(cfg: Config) -> RehearsalTarget:
    found = hook(cfg, "rehearse_target")
    if found is None:
        raise RehearsalError(
            f"rehearse needs the project's app and load: name a RehearsalTarget as "
            f"rehearse_target in [{SECTION}] of alembic.ini (alembic-pg-guard's README)"
        )
    target = found() if callable(found) else found
    if not isinstance(target, RehearsalTarget):
        raise RehearsalError(f"rehearse_target is {type(target).__name__}, not RehearsalTarget")
    return target


def start_app(
    target: RehearsalTarget, env: dict[str, str], cwd: Path, log: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [part.format(port=port) for part in target.app_command]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise RehearsalError(f"the app exited at start: {' '.join(tail)}")
        try:
            with urllib.request.urlopen(url + target.health_path, timeout=2):  # noqa: S310
                return proc, url
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RehearsalError(f"the app did not answer {target.health_path} within 60 s")


def stop(proc: subprocess.Popen | None, timeout: float = 40) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_load(
    target: RehearsalTarget, url: str, rate: float, plan: Path, out: Path, cwd: Path, log: Path
) -> subprocess.Popen:
    args = ["--url", url, "--rate", str(rate), "--plan", str(plan), "--out", str(out)]
    with log.open("ab") as err:
        return subprocess.Popen(
            [*target.load_command, *args], cwd=cwd, stdout=err, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def new_dead(before: dict[str, int], dsn: str) -> int:
    """Dead row versions added since `before` (a vacuum in between only lowers it)."""
    return sum(max(0, n - before.get(t, 0)) for t, n in dead_tuples(dsn).items())


def read_records(path: Path) -> list[list]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a hard stop
    return records


# --- the rehearsal ---------------------------------------------------------------------


def rehearse(cfg: Config, args: Args, console: Console) -> dict:
    settings, target, root = settings_of(cfg), target_of(cfg), project_root(cfg)
    start, todo = pending(ScriptDirectory.from_config(cfg), args.start, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("app.log", "loadgen.log", "migrate.log"):
        (args.out / name).unlink(missing_ok=True)
    windows: list[report.Window] = []
    tracer = StatementTracer()
    app = load = None
    sampler: LockSampler | None = None
    failed_at: str | None = None
    role = AppRole(APP_ROLE, secrets.token_urlsafe(16))
    with scratch_server(cfg) as server, fresh_database(server, "rehearse") as database:
        throwaway = settings.for_database(database, app_role=role)
        engine = migrate.sync_engine(throwaway)
        run_cfg = attach(Config(cfg.config_file_name), throwaway)
        run_cfg.set_main_option("script_location", cfg.get_main_option("script_location") or "")
        run_cfg.attributes["connection"] = engine  # env.py then leaves logging alone
        dsn = database.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with console.status(f"migrating a throwaway database to {start}"):
                migrate.upgrade(run_cfg, start)
            console.log(f"throwaway PostgreSQL at {start}")
            t = time.monotonic()
            with console.status("seeding") as status:
                added = seed.fill(
                    engine,
                    args.rows,
                    progress=lambda table, n: status.update(f"seeding {table}: {n:,} rows"),
                )
            rows = ", ".join(f"{n:,} rows into {table}" for table, n in added.items())
            console.log(f"seeded {rows or 'nothing'} in {time.monotonic() - t:.1f} s")
            api_key = secrets.token_urlsafe(24)
            env = target.app_env(dsn, role, api_key)
            app, url = start_app(target, env, root, args.out / "app.log")
            target.plan(dsn, api_key, args.out / "plan.json")
            requests = args.out / "requests.jsonl"
            load = start_load(
                target, url, args.rate, args.out / "plan.json", requests, root,
                args.out / "loadgen.log",
            )  # fmt: skip
            origin = time.monotonic()
            sampler = LockSampler(dsn)
            sampler.start()
            with console.status(f"load warm-up: {args.rate:g} requests/s for {args.warmup:g} s"):
                time.sleep(args.warmup)
            reader_seconds = long_reader_seconds(args, throwaway)
            for i, rev in enumerate(todo, 1):
                label = f"{rev.revision} {rev.doc.splitlines()[0] if rev.doc else ''}".strip()
                tables_before, files_before = seed.table_names_at(dsn), relfilenodes(dsn)
                dead_before, (lsn, _) = dead_tuples(dsn), wal_position(dsn)
                reader = LongReader(dsn, sorted(tables_before), reader_seconds)
                window = report.Window("revision", label, time.monotonic(), 0.0)
                window.rows = table_rows(dsn)
                window.since = max((w.end for w in windows if w.kind == "revision"), default=0.0)
                window.long_reader = reader_seconds if tables_before else 0.0
                # The runner's retry lines go to the log: stderr keeps the one-line verdict.
                with (
                    console.status(f"applying {i}/{len(todo)}: {label}"),
                    (args.out / "migrate.log").open("a") as migrate_log,
                    contextlib.redirect_stderr(migrate_log),
                    reader,
                ):
                    window.start = time.monotonic()
                    tracer.active = True
                    try:
                        migrate.upgrade(run_cfg, rev.revision)
                    except Exception as exc:  # a revision that fails is the finding
                        window.error = str(exc).strip().splitlines()[0][:300]
                    finally:
                        tracer.active = False
                        window.end = time.monotonic()
                if reader.error:
                    raise RehearsalError(f"the long reader could not hold its lock: {reader.error}")
                window.wal_bytes = wal_position(dsn, lsn)[1]
                windows.append(window)
                files_after = relfilenodes(dsn)
                window.rewrites = sorted(
                    t for t, node in files_before.items() if files_after.get(t, node) != node
                )
                console.log(f"{label}: {window.end - window.start:.2f} s")
                if window.error:
                    failed_at = rev.revision
                    window.dead_tuples = new_dead(dead_before, dsn)
                    break
                new_tables = seed.table_names_at(dsn) - tables_before
                if new_tables:
                    seeding = report.Window("seed", f"seed {', '.join(sorted(new_tables))}",
                                            time.monotonic(), 0.0)  # fmt: skip
                    with console.status(f"seeding {', '.join(sorted(new_tables))}"):
                        seed.fill(engine, args.rows, only=new_tables)
                    seeding.end = time.monotonic()
                    windows.append(seeding)
                time.sleep(args.gap)  # also lets the migration's statistics reach the views
                window.dead_tuples = new_dead(dead_before, dsn)
        finally:
            if sampler is not None:
                sampler.stop()
            with console.status("stopping the load and the app"):
                stop(load)
                stop(app)
            tracer.close()
            engine.dispose()
    records = read_records(args.out / "requests.jsonl") if load is not None else []
    revisions = [
        report.summarize(w, records, tracer.statements, sampler.waits if sampler else [],
                         args.budget, APP_ROLE)
        for w in windows if w.kind == "revision"
    ]  # fmt: skip
    result = {
        "from": start,
        "rows": args.rows,
        "rate": args.rate,
        "budget": vars(args.budget),
        "requests": len(records),
        "revisions": revisions,
        "stopped_at": failed_at,
        "statements": [s.as_dict() for s in tracer.statements],
    }
    (args.out / "report.json").write_text(json.dumps(result, indent=2))
    report.plot(
        args.out / "timeline.png",
        records,
        windows,
        origin,
        f"rehearsal from {start}: {args.rows:,} rows, {args.rate:g} requests/s",
    )
    return result


def print_summary(result: dict, out: Path, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"rehearsal from {result['from']} ({result['rows']:,} rows)")
    columns = ("revision", "s", "requests", "p99 ms", "max ms", ">1 s", "lock wait ms", "errors",
               "row locks", "WAL MB", "dead rows", "rewrote", "verdict")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=column == "revision")
    for r in result["revisions"]:
        locks = r["row_locks"]
        held = f"{locks['rows']:,} for {locks['held_s']:.2f} s" if locks["rows"] else "-"
        table.add_row(
            r["revision"].split()[0], f"{r['seconds']:.2f}", str(r["requests"]), str(r["p99_ms"]),
            str(r["max_ms"]), str(r["over_1s"]), str(r["max_lock_wait_ms"]), str(r["errors"]),
            held, f"{r['wal_bytes'] / 1e6:.1f}", f"{r['dead_tuples']:,}",
            ", ".join(r["rewrote"]) or "-", r["verdict"],
        )  # fmt: skip
    console.print(table)
    for r in result["revisions"]:
        for reason in r["reasons"]:
            console.print(f"[bold]{r['revision'].split()[0]}[/]: {reason}")
    console.print(f"report: {out / 'report.json'}, timeline: {out / 'timeline.png'}")


def main(cfg: Config, argv: list[str] | None = None) -> int:
    args = parse(argv)
    # stdout: stderr keeps the one line of a failure. Wide enough for the table in a log.
    console = Console(width=None if sys.stdout.isatty() else 130)
    with fail_on_errors():
        result = rehearse(cfg, args, console)
        print_summary(result, args.out, console)
        over = [r for r in result["revisions"] if r["verdict"] != "pass"]
        if over:
            raise RehearsalError(
                "; ".join(
                    f"revision {r['revision'].split()[0]} {r['verdict']} (client stall "
                    f"{r['max_ms'] / 1000:.2f} s, {r['errors']} errors): {r['reasons'][0]}"
                    for r in over
                )
            )
    return 0

"""`rehearse --rolling`: the previous release and this one, both live under load on one
throwaway database, through a rolling deploy: old only → migrate → new starts → old drains
→ new only. Requests go through an emulated Kubernetes Service (router.py); the goal is
no failed request and no moment without a ready server.

    alembic-pg-guard rehearse --rolling                 # from the release in production
    alembic-pg-guard rehearse --rolling --base v1.4.0   # from that ref
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from rich.console import Console

from alembic_pg_guard import _runner as migrate
from alembic_pg_guard._compat import Project
from alembic_pg_guard._config import attach, project_root, settings_of
from alembic_pg_guard._errors import fail_on_errors
from alembic_pg_guard._rehearse import rolling_report, seed
from alembic_pg_guard._rehearse.rolling_report import Phase
from alembic_pg_guard._rehearse.router import Router
from alembic_pg_guard._rehearse.run import (
    APP_ROLE,
    RehearsalError,
    free_port,
    read_records,
    start_load,
    stop,
    target_of,
)
from alembic_pg_guard._rehearse.target import RehearsalTarget
from alembic_pg_guard._rehearse.timings import Timings
from alembic_pg_guard._scratch import fresh_database, scratch_server
from alembic_pg_guard._settings import AppRole

# How long a server may take to start, and the new one to pass its readiness probe.
START_SECONDS = 60.0
LOGS = ("old.log", "new.log", "loadgen.log", "migrate.log")


@dataclass
class Args:
    base: str | None
    rows: int
    rate: float
    hold: float
    timings: Timings
    out: Path


def parse(argv: list[str] | None) -> Args:
    d = Timings()
    p = argparse.ArgumentParser(
        prog="alembic-pg-guard rehearse --rolling",
        description="The previous release and this one under load through a rolling deploy "
        "on a throwaway database: old only, migrate, new starts, old drains, new only.",
    )
    p.add_argument(
        "--base", metavar="REF", help="the previous release (default: as compat chooses it)"
    )
    p.add_argument("--rows", type=int, default=10_000, help="rows in the largest table (10000)")
    p.add_argument("--rate", type=float, default=50, help="requests per second (default 50)")
    p.add_argument("--hold", type=float, default=3, metavar="SECONDS",
                   help="load in old only, after the migration, new only (default 3)")  # fmt: skip
    for flag, default, what in (
        ("--probe-period", d.probe_period, "readinessProbe.periodSeconds"),
        ("--probe-timeout", d.probe_timeout, "readinessProbe.timeoutSeconds"),
        ("--failure-threshold", d.failure_threshold, "readinessProbe.failureThreshold"),
        ("--success-threshold", d.success_threshold, "readinessProbe.successThreshold"),
        ("--endpoint-lag", d.endpoint_lag, "seconds until the routing follows a change"),
        ("--prestop-sleep", d.prestop_sleep, "preStop sleep before SIGTERM, seconds"),
        ("--drain-timeout", d.drain_timeout, "the server's drain bound, seconds"),
        ("--grace-period", d.grace_period, "terminationGracePeriodSeconds: then SIGKILL"),
    ):
        p.add_argument(flag, type=type(default), default=default, help=f"{what} ({default:g})")
    p.add_argument("--out", type=Path, default=Path("rehearsal/rolling"), help="report folder")
    a = p.parse_args(argv)
    if min(a.rows, a.rate, a.probe_period, a.failure_threshold, a.success_threshold) <= 0:
        p.error("--rows, --rate, --probe-period and the thresholds must be positive")
    timings = Timings(
        a.probe_period, a.probe_timeout, a.failure_threshold, a.success_threshold,
        a.endpoint_lag, a.prestop_sleep, a.drain_timeout, a.grace_period,
    )  # fmt: skip
    return Args(a.base, a.rows, a.rate, a.hold, timings, a.out)


@dataclass(frozen=True)
class Releases:
    """The base (the previous release) and the current tree: what is rolled out."""

    ref: str
    commit: str
    why: str
    base_head: str
    head: str
    new: list[str]  # the revisions after base_head, oldest first, with their titles


def resolve_base(project: Project, ref: str | None) -> tuple[str, str, str]:
    """(ref, commit, why): the base to roll from; GuardErrors for what cannot be one."""
    if not project.git("rev-parse", "--show-toplevel", check=False):
        raise RehearsalError(
            f"rehearse --rolling checks the previous release out with git, and "
            f"{project.root} is not in a git repository"
        )
    why = f"base {ref}: --base"
    if not ref:
        ref, why = project.default_base()
    commit = project.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not commit:
        raise RehearsalError(f"--base {ref}: not a commit of this repository")
    return ref, commit, why


def releases(
    project: Project, cfg: Config, base_root: Path, ref: str, commit: str, why: str
) -> Releases:
    try:
        base_heads = project.script_at(base_root).get_heads()
    except Exception:  # alembic raises several kinds for a missing or broken folder
        base_heads = []
    if not base_heads:
        raise RehearsalError(f"--base {ref}: has no revisions in {project.versions} to roll from")
    if len(base_heads) != 1:
        raise RehearsalError(f"--base {ref}: its history has {len(base_heads)} heads")
    current = ScriptDirectory.from_config(cfg)
    heads = current.get_heads()
    if len(heads) != 1:
        raise RehearsalError(f"the history has {len(heads)} heads: merge them first")
    try:
        current.get_revision(base_heads[0])
    except Exception:  # alembic raises several kinds for an unknown id
        raise RehearsalError(
            f"--base {ref}: its head {base_heads[0]} is not in the current history "
            "(was it rewritten?)"
        ) from None
    later = reversed(list(current.iterate_revisions(heads[0], base_heads[0])))
    new = [f"{s.revision} {(s.doc or '').splitlines()[0] if s.doc else ''}".strip()
           for s in later if s.revision != base_heads[0]]  # fmt: skip
    return Releases(ref, commit, why, base_heads[0], heads[0], new)


# --- servers ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path


def start_server(
    name: str, target: RehearsalTarget, env: dict[str, str], cwd: Path, out: Path, t: Timings
) -> Server:
    """The project's server as production runs it, in the release's checkout `cwd`."""
    port = free_port()
    fill = {"port": port, "drain_timeout": f"{t.drain_timeout:g}"}
    command = [part.format(**fill) for part in (target.serve_command or target.app_command)]
    extra = {key: value.format(**fill) for key, value in target.serve_env.items()}
    log = out / f"{name}.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env | extra, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Server(name, proc, f"http://127.0.0.1:{port}", log)


def wait_until(check: Callable[[], bool], server: Server, router: Router, what: str) -> None:
    """Until `check()`; a RehearsalError when `server` exits or START_SECONDS pass first."""
    deadline = time.monotonic() + START_SECONDS
    while not check():
        if server.proc.poll() is not None:
            raise RehearsalError(
                f"the {server.name} server exited {server.proc.returncode} before {what}: "
                f"{last_line(server.log)}"
            )
        if time.monotonic() > deadline:
            raise RehearsalError(
                f"the {server.name} server: not {what} within {START_SECONDS:g} s (its "
                f"readiness probe's last answer: {' '.join(router.answer(server.name).split())})"
            )
        time.sleep(0.05)


def own_guard(checkout: Path) -> str | None:
    """The base checkout's copy of this package, when its repository holds one where this
    one's holds it (an editable install): the old release migrates and serves with its own
    guard, as it did."""
    import alembic_pg_guard

    source = Path(alembic_pg_guard.__file__).resolve().parent.parent
    top = Project(source, source, ()).git("rev-parse", "--show-toplevel", check=False)
    if not top:
        return None
    copy = checkout / source.relative_to(Path(top).resolve())
    return str(copy) if (copy / "alembic_pg_guard" / "__init__.py").is_file() else None


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:300] if lines else "no output"


# --- the rehearsal ---------------------------------------------------------------------


@dataclass
class Context:
    """What the sequence runs: the project's target, in its two checkouts."""

    cfg: Config
    target: RehearsalTarget
    root: Path  # the current tree
    base_root: Path  # the base's checkout
    releases: Releases
    base_path: str | None  # PYTHONPATH for the base's processes: its own copy of the guard


class Rollout:
    """The sequence on a throwaway database, recording its phases and how the old stopped."""

    def __init__(self, ctx: Context, args: Args, router: Router, console: Console) -> None:
        self.ctx, self.args, self.router, self.console = ctx, args, router, console
        self.phases: list[Phase] = []
        self.errors: list[str] = []
        self.origin: float | None = None  # when the load started
        self.old_exit: int | None = None
        self.old_killed = False
        self.drain_s: float | None = None
        self.migration_s: float | None = None

    def begin(self, name: str) -> None:
        now = time.monotonic()
        if self.phases:
            self.phases[-1].end = now
        self.phases.append(Phase(name, now))
        self.console.log(f"phase: {name}")

    def hold(self, what: str) -> None:
        with self.console.status(f"{what}: {self.args.hold:g} s of load"):
            time.sleep(self.args.hold)

    def run(self) -> None:
        ctx, args, console = self.ctx, self.args, self.console
        rel, role = ctx.releases, AppRole(APP_ROLE, secrets.token_urlsafe(16))
        servers: dict[str, Server] = {}
        load = None
        settings = settings_of(ctx.cfg)
        with scratch_server(ctx.cfg) as server, fresh_database(server, "rolling") as database:
            throwaway = settings.for_database(database, app_role=role)
            engine = migrate.sync_engine(throwaway)
            run_cfg = attach(Config(ctx.cfg.config_file_name), throwaway)
            location = ctx.cfg.get_main_option("script_location") or ""
            run_cfg.set_main_option("script_location", location)
            run_cfg.attributes["connection"] = engine  # env.py then leaves logging alone
            dsn = database.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                api_key = secrets.token_urlsafe(24)
                env = ctx.target.app_env(dsn, role, api_key)
                with console.status(f"the base's runner: to its head {rel.base_head}"):
                    self.migrate_base(env)
                with console.status("seeding") as status:
                    added = seed.fill(
                        engine, args.rows,
                        progress=lambda table, n: status.update(f"seeding {table}: {n:,} rows"),
                    )  # fmt: skip
                console.log("seeded " + (", ".join(f"{n:,} {t}" for t, n in added.items()) or "0"))
                servers["old"] = old = self.start("old", self.for_base(env), ctx.base_root)
                wait_until(lambda: self.router.routed("old"), old, self.router, "ready and routed")
                ctx.target.plan(dsn, api_key, args.out / "plan.json")
                self.begin("old only")
                self.origin = self.phases[0].start
                load = start_load(
                    ctx.target, self.router.url, args.rate, args.out / "plan.json",
                    args.out / "requests.jsonl", ctx.root, args.out / "loadgen.log",
                )  # fmt: skip
                self.hold("old only")
                self.begin("migrate")
                self.apply(run_cfg, rel.head)
                self.hold("the old server on the new schema")
                if self.errors:
                    return
                self.begin("new starts")
                servers["new"] = new = self.start("new", env, ctx.root)
                try:
                    with console.status("the new server starts"):
                        wait_until(lambda: self.router.ready("new"), new, self.router, "ready")
                except RehearsalError as exc:
                    self.errors.append(str(exc))
                    return
                self.begin("old drains")  # maxSurge 1, maxUnavailable 0: the new one is ready
                self.drain(old)
                self.begin("new only")
                self.hold("new only")
            finally:
                if self.phases:
                    self.phases[-1].end = time.monotonic()
                with console.status("stopping the load and the servers"):
                    stop(load)
                    for started in servers.values():
                        stop(started.proc)
                engine.dispose()

    def for_base(self, env: dict[str, str]) -> dict[str, str]:
        """The environment of the base's processes: its own guard first, if it has one."""
        if self.ctx.base_path is None:
            return env
        paths = [self.ctx.base_path, *filter(None, [env.get("PYTHONPATH")])]
        return env | {"PYTHONPATH": os.pathsep.join(paths)}

    def migrate_base(self, env: dict[str, str]) -> None:
        """The base's own runner and revisions, as its release migrated production."""
        ctx, log = self.ctx, self.args.out / "migrate.log"
        ini = ctx.base_root / Path(ctx.cfg.config_file_name or "alembic.ini").name
        command = [sys.executable, "-m", "alembic_pg_guard", "-c", str(ini), "migrate",
                   "--target", ctx.releases.base_head]  # fmt: skip
        with log.open("ab") as sink:
            done = subprocess.run(
                command, cwd=ctx.base_root, env=self.for_base(env), stdout=sink,
                stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise RehearsalError(
                f"the base's runner could not migrate a throwaway database to its head "
                f"{ctx.releases.base_head}: {last_line(log)}"
            )

    def start(self, name: str, env: dict[str, str], cwd: Path) -> Server:
        started = start_server(name, self.ctx.target, env, cwd, self.args.out, self.args.timings)
        self.router.add(name, started.url)
        return started

    def apply(self, run_cfg: Config, head: str) -> None:
        """The current tree's runner to head, its retry lines in migrate.log."""
        with (
            self.console.status(f"migrating to {head} while the old server serves"),
            (self.args.out / "migrate.log").open("a") as log,
            contextlib.redirect_stderr(log),
        ):
            started = time.monotonic()
            try:
                migrate.upgrade(run_cfg, head)
            except Exception as exc:  # a revision that fails is the finding
                self.errors.append(f"migrating to {head}: {first_line(exc)}")
            self.migration_s = time.monotonic() - started

    def drain(self, old: Server) -> None:
        """Kubernetes deletes the pod: out of the endpoints after the lag; meanwhile the
        preStop sleep, then SIGTERM, then SIGKILL once the grace period is over. Done once
        the old server has exited and left the routing."""
        t = self.args.timings
        self.router.remove(old.name)
        with self.console.status(f"preStop: {t.prestop_sleep:g} s"):
            time.sleep(t.prestop_sleep)
        old.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        with self.console.status("SIGTERM: the old server drains"):
            try:
                self.old_exit = old.proc.wait(timeout=max(0.0, t.grace_period - t.prestop_sleep))
            except subprocess.TimeoutExpired:
                self.old_killed = True
                old.proc.kill()
                self.old_exit = old.proc.wait()
        self.drain_s = time.monotonic() - sent
        while self.router.routed(old.name):  # exited before the routing dropped it
            time.sleep(0.05)
        self.console.log(
            f"the old server exited {self.old_exit} {self.drain_s:.2f} s after SIGTERM"
        )


def rehearse(cfg: Config, args: Args, console: Console) -> dict:
    project, root = Project.of(cfg), project_root(cfg)
    ref, commit, why = resolve_base(project, args.base)
    console.log(why)
    top = Path(project.git("rev-parse", "--show-toplevel")).resolve()
    with project.worktree(commit) as checkout:
        base_root = checkout / root.resolve().relative_to(top)
        rel = releases(project, cfg, base_root, ref, commit, why)
        ctx = Context(cfg, target_of(cfg), root, base_root, rel, own_guard(checkout))
        args.out.mkdir(parents=True, exist_ok=True)
        for name in LOGS:
            (args.out / name).unlink(missing_ok=True)
        with Router(ctx.target.ready_path, args.timings) as router:
            rollout = Rollout(ctx, args, router, console)
            rollout.run()
    records = read_records(args.out / "requests.jsonl") if rollout.origin is not None else []
    return rolling_report.result(rel, args, rollout, router, records, rollout.origin)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def main(cfg: Config, argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(width=None if sys.stdout.isatty() else 130)
    with fail_on_errors():
        result = rehearse(cfg, args, console)
        rolling_report.write(result, args.out)
        rolling_report.show(result, args.out, console)
        if result["reasons"]:
            raise RehearsalError("rolling deploy missed the goal: " + "; ".join(result["reasons"]))
    return 0

"""`compat [--base REF]`: does the previous release still work on the new schema?

Expand/contract holds only if the old code keeps serving while and after the new
revisions run. This checks out the base ref into a temporary git worktree, migrates a
throwaway database to the current head with the current runner, and runs the base's own
API tests (alembic.ini's [alembic_pg_guard] compat_tests, default tests/routes) against
it, their settings pointed at that database by TEST_DATABASE_URL. On a failure it
migrates one new revision at a time to name the first one that breaks the old code.

Default base: the release that runs in production, as a deploy replaces it: COMPAT_BASE,
else the newest `v*` tag reachable from HEAD (not one on HEAD itself), else where HEAD
leaves its upstream branch (or origin/HEAD). Never merely the commit before: a change
split over commits pushed together would be checked against its own middle. When none of
these names the release, it falls back to the commit before the latest change to the
versions folder, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import URL

from alembic_pg_guard import _runner as migrate
from alembic_pg_guard._config import attach, hook, option, project_root, settings_of
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._scratch import create_database, scratch_server
from alembic_pg_guard._settings import GuardSettings

API_TESTS = ("tests/routes",)
PROBE = Path(__file__).with_name("_compat_probe.py")
SCAN_TESTS = 5
# Environment variables the base's tests must not inherit: they would point elsewhere.
DATABASE_VARIABLES = ("DATABASE_URL", "APP_DATABASE_URL", "POSTGRES_APP_USER")
BASE_VARIABLE = "COMPAT_BASE"  # the release in production, when tags and branches cannot tell


class CompatError(GuardError):
    """One line: the base cannot be checked, or which revision breaks it."""


@dataclass(frozen=True)
class Project:
    """Where things are: the repository, its versions folder, the base's API tests."""

    root: Path
    script_location: Path
    api_tests: tuple[str, ...]  # paths or globs, relative to the repository

    @classmethod
    def of(cls, cfg: Config) -> Project:
        location = Path(cfg.get_main_option("script_location") or "alembic")
        root = project_root(cfg)
        tests = tuple((option(cfg, "compat_tests") or "").split()) or API_TESTS
        return cls(root, location if location.is_absolute() else root / location, tests)

    def tests_in(self, root: Path) -> list[str]:
        """The API tests present in `root` (a checkout), as pytest arguments."""
        found = {p.relative_to(root).as_posix() for g in self.api_tests for p in root.glob(g)}
        return sorted(found)

    @property
    def versions(self) -> str:
        """The versions folder, relative to the repository (as git names it)."""
        return (self.script_location / "versions").relative_to(self.root).as_posix()

    def git(self, *args: str, check: bool = True) -> str:
        command = ["git", *args]  # git from PATH, as a developer runs it
        proc = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise CompatError(f"git {' '.join(args)}: {detail[-1] if detail else proc.returncode}")
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def default_base(self) -> tuple[str, str]:
        """The release in production and one line saying why that one (module docstring)."""
        if ref := os.environ.get(BASE_VARIABLE, "").strip():
            return ref, f"base {ref}: from {BASE_VARIABLE}"
        head = self.git("rev-parse", "HEAD", check=False)
        parent = self.git("rev-parse", "--verify", "--quiet", "HEAD^", check=False)
        for start in (head, parent):  # a tag on HEAD is the release being made, not the old one
            tag = self.git("describe", "--tags", "--abbrev=0", "--match", "v*", start, check=False)
            if tag and self.git("rev-parse", f"{tag}^{{commit}}", check=False) != head:
                return tag, f"base {tag}: the newest v* tag behind HEAD"
        for upstream in ("@{upstream}", "origin/HEAD"):
            fork = self.git("merge-base", "HEAD", upstream, check=False) if head else ""
            if fork and fork != head:
                name = self.git("rev-parse", "--abbrev-ref", upstream, check=False) or upstream
                return fork, f"base {fork[:12]}: where HEAD leaves {name}"
        ref, what = self.fallback_base()
        return ref, (
            f"base {ref[:12]}: no v* tag, {BASE_VARIABLE} or upstream branch behind HEAD names "
            f"the release in production, so {what}; tag each release (git tag v1.2.3) or set "
            f"{BASE_VARIABLE}=<its ref>"
        )

    def fallback_base(self) -> tuple[str, str]:
        """The commit before the latest change to the versions folder (HEAD if uncommitted)."""
        if self.git("status", "--porcelain", "--", self.versions):
            return "HEAD", f"HEAD ({self.versions} has uncommitted changes)"
        last = self.git("log", "-1", "--format=%H", "--", self.versions)
        if not last:
            raise CompatError(f"no commit has changed {self.versions} yet: give --base REF")
        parent = self.git("rev-parse", "--verify", "--quiet", f"{last}^", check=False)
        if not parent:
            raise CompatError(
                f"the first commit ({last[:12]}) created {self.versions}: there is no older "
                "code to check; give --base REF"
            )
        return parent, f"the commit before the latest change to {self.versions}"

    @contextmanager
    def worktree(self, ref: str) -> Iterator[Path]:
        """`ref` checked out (detached) in a temporary worktree, removed afterwards."""
        sha = self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if not sha:
            raise CompatError(f"--base {ref}: not a commit of this repository")
        root = Path(tempfile.mkdtemp(prefix="check-compat-"))
        path = root / "base"
        self.git("worktree", "add", "--detach", "--quiet", str(path), sha)
        try:
            yield path
        finally:
            self.git("worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(root, ignore_errors=True)

    def script_at(self, root: Path) -> ScriptDirectory:
        """The history as checked out at `root` (this repository's layout)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(root / self.versions.rsplit("/", 1)[0]))
        cfg.set_main_option("path_separator", "os")
        return ScriptDirectory.from_config(cfg)


@dataclass
class Failure:
    test: str
    request: str | None
    status: int | None
    error: str

    def describe(self) -> str:
        sent = f"{self.request} → {self.status or 'no response'}" if self.request else "no request"
        return f"{self.test}: {sent} ({self.error})"


def base_env(database_url: str) -> dict[str, str]:
    """The base's tests' environment: this one, their database named by TEST_DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES}
    env.pop("PIPENV_ACTIVE", None)
    return env | {"TEST_DATABASE_URL": database_url}


class Checker:
    """Runs the base's API tests on databases of one throwaway server."""

    def __init__(self, cfg: Config, project: Project, base: Path, server: URL, probe: Path):
        self.cfg, self.project, self.base, self.server, self.probe = (
            cfg,
            project,
            base,
            server,
            probe,
        )
        self.settings: GuardSettings = settings_of(cfg)
        self.current = project.script_at(project.root)
        self.summary = ""
        env_hook = hook(cfg, "compat_env")
        self.env = env_hook or base_env

    def database_at(self, revision: str) -> str:
        """A new database of the server, migrated by the current runner to `revision`."""
        url = create_database(self.server, "compat")
        target = self.settings.for_database(url)
        cfg = attach(Config(self.cfg.config_file_name), target)
        cfg.set_main_option("script_location", str(self.project.script_location))
        cfg.attributes["connection"] = migrate.sync_engine(target)  # quiet: no fileConfig
        try:
            migrate.upgrade(cfg, revision)
        except GuardError as exc:
            raise CompatError(f"migrating a throwaway database to {revision}: {exc}") from None
        finally:
            cfg.attributes["connection"].dispose()
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def give_revisions_up_to(self, revision: str) -> None:
        """The base's versions := the current files up to `revision`, so the base's own
        runner finds its database at head and leaves it as it is."""
        versions = self.base / self.project.versions
        shutil.rmtree(versions)
        shutil.copytree(
            self.project.root / self.project.versions,
            versions,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        later = self.current.iterate_revisions(self.current.get_current_head(), revision)
        for script in later:
            if script.revision != revision and script.path:
                (versions / Path(script.path).name).unlink(missing_ok=True)

    def run_tests(self, revision: str, tests: list[str]) -> list[Failure]:
        """The base's tests (`tests`, or all the API tests) on a database at `revision`."""
        self.give_revisions_up_to(revision)
        url = self.database_at(revision)
        report = self.probe / f"report-{uuid.uuid4().hex[:8]}.jsonl"
        env = self.env(url) | {
            "COMPAT_REPORT": str(report),
            "PYTHONPATH": os.pathsep.join([str(self.probe), str(self.base)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        selected = tests or self.project.tests_in(self.base)
        command = [sys.executable, "-m", "pytest", *selected, "-q",
                   "-p", "compat_probe", "-p", "no:cacheprovider", "--no-header"]  # fmt: skip
        proc = subprocess.run(command, cwd=self.base, env=env, capture_output=True, text=True)
        failures = [Failure(**json.loads(line)) for line in self._lines(report)]
        lines = proc.stdout.strip().splitlines()
        self.summary = lines[-1].strip("= ") if lines else ""
        if proc.returncode != 0 and not failures:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
            raise CompatError(f"the base's tests did not run at {revision}: {' '.join(tail)}")
        return failures

    @staticmethod
    def _lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []


def label(script: Script) -> str:
    doc = (script.doc or "").splitlines()[0] if script.doc else ""
    return f"{script.revision} ({doc})" if doc else script.revision


def run(cfg: Config, ref: str | None = None, *, scratch_url: str | None = None) -> str:
    """The command: one line saying the base passes, else a CompatError naming the revision."""
    project = Project.of(cfg)
    if not ref:
        ref, why = project.default_base()
        print(why, flush=True)
    git = project.git
    sha = git("rev-parse", "--short", f"{ref}^{{commit}}", check=False) or ref
    name = sha if git("rev-parse", f"{ref}^{{commit}}", check=False) == ref else f"{ref} ({sha})"
    with project.worktree(ref) as base, scratch_server(cfg, scratch_url) as server:
        if not project.tests_in(base):
            raise CompatError(
                f"{ref} has no {' '.join(project.api_tests)}: nothing to run against the new schema"
            )
        base_heads = project.script_at(base).get_heads()
        current = project.script_at(project.root)
        head = current.get_current_head()
        if len(base_heads) != 1 or head is None:
            raise CompatError("the base and the current history must each have one head")
        base_head = base_heads[0]
        try:
            current.get_revision(base_head)
        except Exception:  # alembic raises several kinds for an unknown id
            raise CompatError(
                f"{ref}'s head {base_head} is not in the current history: was it rewritten?"
            ) from None
        new = [s for s in reversed(list(current.iterate_revisions(head, base_head)))
               if s.revision != base_head]  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="compat-probe-") as probe:
            shutil.copy2(PROBE, Path(probe) / "compat_probe.py")
            checker = Checker(cfg, project, base, server, Path(probe))
            failures = checker.run_tests(head, [])
            if not failures:
                return (
                    f"ok: the API tests of {name} pass on the current head {head} with "
                    f"their own code ({checker.summary}; {len(new)} revision(s) newer than theirs)"
                )
            # A few of the failing tests suffice to find the revision that breaks them.
            tests = sorted({f.test for f in failures})[:SCAN_TESTS]
            for script in [current.get_revision(base_head), *new]:
                found = checker.run_tests(script.revision, tests)
                if found and script.revision == base_head:
                    raise CompatError(
                        f"the API tests of {name} fail on their own schema "
                        f"{base_head}: {found[0].describe()}"
                    )
                if found:
                    n = len(failures) - 1
                    more = f" (and {n} more failing test{'s' * (n > 1)} on head)" if n else ""
                    raise CompatError(
                        f"revision {label(script)} breaks the code of {name}: "
                        f"{found[0].describe()}{more}"
                    )
            raise CompatError(
                f"the API tests of {name} failed on head {head} but passed when re-run "
                f"one revision at a time (flaky?): {failures[0].describe()}"
            )

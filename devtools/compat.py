"""`pipenv run check-compat [--base REF]`: does the previous release still work on the new schema?

Expand/contract holds only if the old code keeps serving while and after the new
revisions run. This checks out the base ref into a temporary git worktree, migrates a
throwaway database to the current head with the current runner, and runs the base's own
API tests (tests/routes) against it. On a failure it migrates one new revision at a time
to name the first one that breaks the old code. docs/migrations.md tells more.

Default base: the last tag, if there is one; else the commit before the latest one that
changed alembic/versions (HEAD itself when alembic/versions has uncommitted changes).
"""

from __future__ import annotations

import argparse
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

from alembic.script import Script, ScriptDirectory
from sqlalchemy import make_url

from devtools.embedded_pg import EmbeddedPostgres, throwaway
from src import migrate
from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT, Settings, read_settings

VERSIONS = "alembic/versions"
API_TESTS = "tests/routes"
PROBE = Path(__file__).with_name("compat_probe.py")
SCAN_TESTS = 5


class CompatError(CommandFailure):
    """One line: the base cannot be checked, or which revision breaks it."""


def git(*args: str, check: bool = True) -> str:
    command = ["git", *args]  # git from PATH, as a developer runs it
    proc = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise CompatError(f"git {' '.join(args)}: {detail[-1] if detail else proc.returncode}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


def default_base() -> str:
    """The last tag, else the commit before the latest change to alembic/versions."""
    if tag := git("describe", "--tags", "--abbrev=0", check=False):
        return tag
    if git("status", "--porcelain", "--", VERSIONS):
        return "HEAD"
    last = git("log", "-1", "--format=%H", "--", VERSIONS)
    if not last:
        raise CompatError(f"no commit has changed {VERSIONS} yet: give --base REF")
    parent = git("rev-parse", "--verify", "--quiet", f"{last}^", check=False)
    if not parent:
        raise CompatError(
            f"the first commit ({last[:12]}) created {VERSIONS}: there is no older code to "
            "check; give --base REF"
        )
    return parent


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out (detached) in a temporary worktree, removed afterwards."""
    sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise CompatError(f"--base {ref}: not a commit of this repository")
    root = Path(tempfile.mkdtemp(prefix="check-compat-"))
    path = root / "base"
    git("worktree", "add", "--detach", "--quiet", str(path), sha)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(root, ignore_errors=True)


def script_at(root: Path) -> ScriptDirectory:
    cfg = migrate.alembic_config()
    cfg.set_main_option("script_location", str(root / "alembic"))
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


class Checker:
    """Runs the base's API tests on databases of one throwaway cluster."""

    def __init__(self, base: Path, pg: EmbeddedPostgres, settings: Settings, probe: Path):
        self.base, self.pg, self.settings, self.probe = base, pg, settings, probe
        self.current = script_at(PROJECT_ROOT)
        self.summary = ""

    def database_at(self, revision: str) -> str:
        """A new database of the cluster, migrated by the current runner to `revision`."""
        name = f"compat_{uuid.uuid4().hex[:10]}"
        url = make_url(self.pg.url)
        engine = migrate.sync_engine(self.settings.for_database(url))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        target = self.settings.for_database(url.set(database=name)).model_copy(
            update={"postgres_app_user": None}
        )
        cfg = migrate.alembic_config(target)
        cfg.attributes["connection"] = migrate.sync_engine(target)  # quiet: no fileConfig
        try:
            migrate.upgrade(target, target=revision, cfg=cfg)
        except CommandFailure as exc:
            raise CompatError(f"migrating a throwaway database to {revision}: {exc}") from None
        return url.set(database=name).render_as_string(hide_password=False)

    def give_revisions_up_to(self, revision: str) -> None:
        """The base's alembic/versions := the current files up to `revision`, so the
        base's own runner finds its database at head and leaves it as it is."""
        versions = self.base / VERSIONS
        shutil.rmtree(versions)
        shutil.copytree(
            PROJECT_ROOT / VERSIONS, versions, ignore=shutil.ignore_patterns("__pycache__")
        )
        later = self.current.iterate_revisions(self.current.get_current_head(), revision)
        for script in later:
            if script.revision != revision and script.path:
                (versions / Path(script.path).name).unlink(missing_ok=True)

    def run_tests(self, revision: str, tests: list[str]) -> list[Failure]:
        """The base's tests (`tests`, or all of tests/routes) on a database at `revision`."""
        self.give_revisions_up_to(revision)
        url = self.database_at(revision)
        report = self.probe / f"report-{uuid.uuid4().hex[:8]}.jsonl"
        fields = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
        env.pop("PIPENV_ACTIVE", None)
        env |= {
            "TEST_DATABASE_URL": url,
            "COMPAT_REPORT": str(report),
            "PYTHONPATH": os.pathsep.join([str(self.probe), str(self.base)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = [sys.executable, "-m", "pytest", *(tests or [API_TESTS]), "-q",
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


def check(ref: str) -> str:
    settings = read_settings()
    sha = git("rev-parse", "--short", f"{ref}^{{commit}}", check=False) or ref
    name = sha if git("rev-parse", f"{ref}^{{commit}}", check=False) == ref else f"{ref} ({sha})"
    with worktree(ref) as base, throwaway(prefix="country-compat-") as pg:
        if not (base / API_TESTS).is_dir():
            raise CompatError(f"{ref} has no {API_TESTS}: nothing to run against the new schema")
        base_heads = script_at(base).get_heads()
        current = script_at(PROJECT_ROOT)
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
            checker = Checker(base, pg, settings, Path(probe))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pipenv run check-compat", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--base", metavar="REF", help="git ref of the old code (see below)")
    parser.epilog = __doc__.split("\n\n")[-1]
    args = parser.parse_args(argv)
    with fail_on_errors():
        print(check(args.base or default_base()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

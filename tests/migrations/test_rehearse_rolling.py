"""`pipenv run rehearse --rolling`: the project's last revision rolls out under load with no
failed request and no moment without a ready server; a missing preStop sleep and a revision
that breaks the previous release are failures; bad bases are one line.

Each rolling run starts its own throwaway cluster, both releases' servers (python -m
src.serve), the routing and the load. The releases are a git repository made of the
project's files: the base commit lacks the last revision, the next commit adds it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import PROJECT_ROOT
from tests.helpers import child_env, copy_project, one_line_failure, script_directory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PHASES = ["old only", "migrate", "new starts", "old drains", "new only"]
GIT = ("git", "-c", "user.name=rehearsal", "-c", "user.email=r@example.com",
       "-c", "commit.gpgsign=false")  # fmt: skip
# A base whose server ignores SIGTERM (src/drain.py's DrainingServer.handle_exit).
HANDLE_EXIT = "    def handle_exit(self, sig: int, frame: FrameType | None) -> None:\n"
IGNORE_SIGTERM = (
    HANDLE_EXIT,
    HANDLE_EXIT + "        if sig == signal.SIGTERM:\n            return\n",
)
RENAME = (
    "def upgrade():\n"
    '    op.alter_column("country", "official_name", new_column_name="formal_name")\n'
)


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def two_releases(dest: Path, base_only: dict[str, str] | None = None) -> tuple[Path, str]:
    """The project's files in a new repository: a base commit without the last revision
    (and with `base_only`'s files, path: text), then HEAD as the project is. The path and
    the base commit."""
    project = copy_project(dest)
    script = script_directory()
    last = Path(script.get_revision(script.get_current_head()).path)
    originals = {path: (project / path).read_text() for path in base_only or {}}
    kept = project / "alembic" / "versions" / last.name
    source = kept.read_text()
    kept.unlink()
    for path, text in (base_only or {}).items():
        (project / path).write_text(text)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the previous release")
    kept.write_text(source)
    for path, text in originals.items():
        (project / path).write_text(text)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "its last revision")
    return project, git(project, "rev-parse", "HEAD^")


def rolling(cwd: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic_pg_guard", "rehearse", "--rolling", "--out", str(out),
         *args],
        cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=540,
    )  # fmt: skip


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def by_phase(result: dict) -> dict[str, dict]:
    return {p["phase"]: p for p in result["phases"]}


def test_the_last_revision_rolls_out_with_no_failed_request(tmp_path: Path) -> None:
    project, base = two_releases(tmp_path / "project")
    out = tmp_path / "out"
    proc = rolling(project, out)  # the default base: the commit before the last revision
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    result = report(out)
    script = script_directory()
    head = script.get_current_head()
    assert result["base"]["commit"] == base
    assert (result["base"]["head"], result["head"]) == (script.get_revision(head).down_revision,
                                                        head)  # fmt: skip
    assert result["failed"] == 0, result["phases"]
    assert result["no_ready_server_s"] == 0, result["events"]
    assert result["old_server"]["exit_code"] == 0 and not result["old_server"]["killed"]
    assert result["old_server"]["drain_s"] < result["timings"]["drain_timeout"]
    phases = by_phase(result)
    assert list(phases) == PHASES
    assert all(p["requests"] > 0 for p in phases.values()), result["phases"]
    assert result["routed"]["old"] > 0 and result["routed"]["new"] > 0, result["routed"]
    assert result["verdict"] == "pass"
    assert "verdict: pass" in (out / "report.md").read_text()


def test_without_a_prestop_sleep_the_draining_server_fails_requests(tmp_path: Path) -> None:
    """SIGTERM as the pod is deleted: for the endpoint lag the old server still gets
    requests, and draining, answers them 503 (or has closed its port)."""
    project, _ = two_releases(tmp_path / "project")
    out = tmp_path / "out"
    proc = rolling(project, out, "--prestop-sleep", "0", "--hold", "2")
    line = one_line_failure(proc)
    assert "rolling deploy missed the goal" in line and "failed request" in line, line
    result = report(out)
    drained = by_phase(result)["old drains"]
    assert drained["non_2xx"].get("503", 0) + drained["non_2xx"].get("502", 0) > 0, drained
    assert result["failed"] > 0 and result["verdict"] == "fail"
    assert by_phase(result)["old only"]["non_2xx"] == {}
    assert result["old_server"]["exit_code"] == 0  # it drained: the routing sent it requests


def test_an_old_server_that_ignores_sigterm_is_killed_and_fails(tmp_path: Path) -> None:
    """The grace period ends it with SIGKILL: it did not drain by itself."""
    drain = (PROJECT_ROOT / "src" / "drain.py").read_text()
    assert IGNORE_SIGTERM[0] in drain, "src/drain.py has no DrainingServer.handle_exit"
    project, _ = two_releases(
        tmp_path / "project", {"src/drain.py": drain.replace(*IGNORE_SIGTERM)}
    )
    out = tmp_path / "out"
    proc = rolling(project, out, "--grace-period", "6", "--prestop-sleep", "2", "--hold", "1")
    line = one_line_failure(proc)
    assert "the old server did not exit within the 6 s grace period" in line, line
    old = report(out)["old_server"]
    assert old["killed"] and old["exit_code"] == -9 and old["drain_s"] >= 4, old


def test_a_revision_that_breaks_the_previous_release_fails_requests(tmp_path: Path) -> None:
    """A contract step too early: the old server's reads fail once the migration ran."""
    project, _ = two_releases(tmp_path / "project")
    versions = project / "alembic" / "versions"
    head = script_directory().get_current_head()
    (versions / "rename_official_name_test_only.py").write_text(
        '"""test-only: rename country.official_name"""\n\nfrom alembic import op\n\n'
        f"revision = 'rename01'\ndown_revision = {head!r}\nbranch_labels = None\n"
        "depends_on = None\n\n" + RENAME
    )
    out = tmp_path / "out"
    base = git(project, "rev-parse", "HEAD")  # the project as it is; head adds the rename
    proc = rolling(project, out, "--base", base, "--hold", "2")
    line = one_line_failure(proc)
    assert "failed request" in line and "migrate: 500" in line, line
    phases = by_phase(report(out))
    assert phases["old only"]["non_2xx"] == {} and phases["old only"]["requests"] > 0
    assert phases["migrate"]["non_2xx"].get("500", 0) > 0, phases["migrate"]


def test_an_unknown_base_is_one_line(tmp_path: Path) -> None:
    project, _ = two_releases(tmp_path / "project")
    proc = rolling(project, tmp_path / "out", "--base", "no-such-ref")
    assert "--base no-such-ref: not a commit of this repository" in one_line_failure(proc)


def test_a_base_with_no_revisions_is_one_line(tmp_path: Path) -> None:
    project, _ = two_releases(tmp_path / "project")
    git(project, "rm", "-rq", "--cached", "alembic/versions")
    git(project, "commit", "-qm", "no revisions")
    empty = git(project, "rev-parse", "HEAD")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the revisions again")
    line = one_line_failure(rolling(project, tmp_path / "out", "--base", empty))
    assert f"--base {empty}: has no revisions in alembic/versions" in line, line


def test_no_git_repository_is_one_line(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    line = one_line_failure(rolling(project, tmp_path / "out"))
    assert "not in a git repository" in line, line

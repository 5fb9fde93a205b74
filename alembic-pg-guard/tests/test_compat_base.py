"""check-compat's default base is the release in production, never merely the commit before:
scratch git repositories with a release, then an expand and a drop committed separately."""

import subprocess
from pathlib import Path

import pytest
from alembic_pg_guard._compat import API_TESTS, BASE_VARIABLE, Project

pytestmark = pytest.mark.slow  # runs git


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(
        command, cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: Path, name: str) -> str:
    """A commit adding revision file `name`; its sha."""
    (repo / "alembic" / "versions" / f"{name}.py").write_text(f"revision = {name!r}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", name)
    return git(repo, "rev-parse", "HEAD")


def release_then_two_commits(root: Path, *, push: bool) -> tuple[Path, str, str]:
    """A clone whose origin holds the release; then expand and drop committed locally (the
    release is pushed when `push`). The clone, the release's sha, the middle commit's."""
    origin = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    repo = root / "repo"
    subprocess.run(["git", "clone", "-q", str(origin), str(repo)], check=True, capture_output=True)
    (repo / "alembic" / "versions").mkdir(parents=True)
    release = commit(repo, "r0_release")
    if push:
        git(repo, "push", "-q", "-u", "origin", "main")
    middle = commit(repo, "r1_expand")
    commit(repo, "r2_drop")
    return repo, release, middle


def project(repo: Path) -> Project:
    return Project(repo, repo / "alembic", API_TESTS)


@pytest.fixture(autouse=True)
def no_base_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASE_VARIABLE, raising=False)


def test_two_unpushed_commits_are_checked_against_the_upstream_release(tmp_path: Path) -> None:
    repo, release, middle = release_then_two_commits(tmp_path, push=True)
    base, why = project(repo).default_base()
    assert base == release != middle, why
    assert why == f"base {release[:12]}: where HEAD leaves origin/main"


def test_the_newest_v_tag_is_the_release_not_other_tags(tmp_path: Path) -> None:
    repo, release, middle = release_then_two_commits(tmp_path, push=False)
    git(repo, "tag", "v1.0.0", release)
    git(repo, "tag", "nightly", middle)
    assert project(repo).default_base() == ("v1.0.0", "base v1.0.0: the newest v* tag behind HEAD")
    git(repo, "tag", "v1.1.0")  # the release being made: the one before it runs in production
    assert project(repo).default_base()[0] == "v1.0.0"


def test_compat_base_names_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, release, _ = release_then_two_commits(tmp_path, push=True)
    git(repo, "tag", "v1.0.0", release)
    monkeypatch.setenv(BASE_VARIABLE, "HEAD~2")
    assert project(repo).default_base() == ("HEAD~2", f"base HEAD~2: from {BASE_VARIABLE}")


def test_with_nothing_naming_the_release_it_says_so_and_how(tmp_path: Path) -> None:
    """CI on the upstream branch itself, untagged: the old fallback, said in one line."""
    repo, _, middle = release_then_two_commits(tmp_path, push=False)
    git(repo, "push", "-q", "-u", "origin", "main")  # HEAD is its upstream's tip
    base, why = project(repo).default_base()
    assert base == middle
    assert why == (
        f"base {middle[:12]}: no v* tag, {BASE_VARIABLE} or upstream branch behind HEAD names "
        "the release in production, so the commit before the latest change to alembic/versions; "
        f"tag each release (git tag v1.2.3) or set {BASE_VARIABLE}=<its ref>"
    )

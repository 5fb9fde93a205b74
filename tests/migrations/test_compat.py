"""`pipenv run check-compat`: the previous code's API tests on the new head schema.

Each test builds a scratch git repository from the project: a first commit (the old
release), then a second one that adds a revision; check-compat's default base is then
the first commit.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import PROJECT_ROOT
from tests.helpers import (
    child_env,
    copy_project,
    one_line_failure,
    script_directory,
    write_revision,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# The API tests (alembic.ini's compat_tests) and what they need.
TEST_FILES = (
    "tests/__init__.py", "tests/conftest.py", "tests/helpers.py", "tests/routes",
    "tests/country", "tests/subdivision",
)  # fmt: skip


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


def scratch_repo(root: Path) -> Path:
    """The project and its API tests, committed once: the old release."""
    repo = copy_project(root / "repo")
    for name in TEST_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "old release")
    return repo


def add_revision(repo: Path, revision: str, body: str) -> None:
    head = script_directory().get_current_head()
    write_revision(repo / "alembic" / "versions", revision, head, body)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"add {revision}")


def check_compat(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic_pg_guard", "compat", *args],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=540,
    )


def test_an_additive_revision_passes(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path)
    add_revision(
        repo,
        "c1_add_nullable",
        'def upgrade():\n    op.add_column("country", sa.Column("capital", sa.String(100)))\n',
    )
    proc = check_compat(repo)
    assert proc.returncode == 0, proc.stderr
    assert "pass on the current head c1_add_nullable" in proc.stdout
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_dropping_a_column_the_old_code_reads_fails_naming_it(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path)
    add_revision(
        repo, "c2_drop_column", 'def upgrade():\n    op.drop_column("country", "official_name")\n'
    )
    line = one_line_failure(check_compat(repo))
    assert "revision c2_drop_column (test-only revision c2_drop_column) breaks the code" in line
    assert "tests/country/" in line and " /country" in line, line
    assert 'column "official_name"' in line, line


def test_not_null_without_default_fails_naming_the_insert(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path)
    add_revision(
        repo,
        "c3_not_null",
        "def upgrade():\n"
        '    op.add_column("country", sa.Column("capital", sa.String(100), nullable=False,'
        ' server_default="-"))\n'
        '    op.alter_column("country", "capital", server_default=None)\n',
    )
    line = one_line_failure(check_compat(repo))
    assert "revision c3_not_null (test-only revision c3_not_null) breaks the code" in line
    assert "POST /country" in line and "capital" in line, line


def test_unknown_base_is_one_line(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path)
    assert "--base nope" in one_line_failure(check_compat(repo, "--base", "nope"))

"""Every Pipfile command that reads settings fails on a bad one with one line naming it.

The commands run exactly as `pipenv run <name>` runs them (the Pipfile's own script
text, through bash, with this venv first on PATH).
"""

import subprocess
import tomllib

import pytest

from src.config import PROJECT_ROOT
from tests.helpers import child_env, one_line_failure

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

SCRIPTS = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["scripts"]
# These never read settings: installing, formatting, linting, listing revision files,
# writing a resource's files.
NO_SETTINGS = {"setup", "lint", "fmt", "alembic-history", "new-resource"}
READS_SETTINGS = sorted(set(SCRIPTS) - NO_SETTINGS)


def run_script(name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", SCRIPTS[name]],
        cwd=PROJECT_ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_script_is_covered_or_knowingly_left_out():
    assert {"start", "dev", "db", "migrate", "test", "bench", "alembic-latest"} <= set(
        READS_SETTINGS
    )
    assert NO_SETTINGS <= set(SCRIPTS)


@pytest.mark.parametrize("name", READS_SETTINGS)
def test_a_bad_setting_is_one_line_naming_it(name: str):
    line = one_line_failure(run_script(name, POSTGRES_PORT="abc"))
    assert "invalid settings: POSTGRES_PORT" in line, line


@pytest.mark.parametrize("name", ["migrate", "alembic-latest", "alembic-current", "start"])
def test_no_database_configured_is_one_line(name: str, tmp_path):
    proc = run_script(
        name,
        DATABASE_URL="",
        POSTGRES_USER="",
        POSTGRES_PASSWORD="",
        POSTGRES_DB="",
        EMBEDDED_PG_DIR=str(tmp_path),
    )
    line = one_line_failure(proc)
    assert "POSTGRES_USER" in line or "invalid settings" in line, line

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from devtools.embedded_pg import free_port
from src.cli import settings_error_line
from src.config import PROJECT_ROOT, Settings, SettingsError, read_settings
from tests.helpers import child_env, one_line_failure, pipenv_project, pipenv_run, run_python

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

BASE = {
    "POSTGRES_USER": "u",
    "POSTGRES_PASSWORD": "p@ss/word",
    "POSTGRES_DB": "d",
}


@pytest.fixture
def env(monkeypatch):
    for key in (
        "DATABASE_URL",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "EMBEDDED_PG_DIR",
        "POSTGRES_APP_USER",
        "POSTGRES_APP_PASSWORD",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_urls_derive_from_postgres_values(env):
    settings = Settings(_env_file=None)
    assert settings.async_url.render_as_string(hide_password=False) == (
        "postgresql+asyncpg://u:p%40ss%2Fword@localhost:5555/d"
    )
    assert settings.sync_url.drivername == "postgresql+psycopg2"
    assert settings.sync_url.password == "p@ss/word"
    assert settings.db_is_local


def test_database_url_overrides_and_swaps_driver(env):
    env.setenv("DATABASE_URL", "postgresql://x:y@db.example.com:6543/other")
    settings = Settings(_env_file=None)
    assert str(settings.async_url).startswith("postgresql+asyncpg://x:")
    assert settings.sync_url.host == "db.example.com"
    assert settings.sync_url.port == 6543
    assert not settings.db_is_local


def test_relative_embedded_dir_is_under_the_project(env):
    env.setenv("EMBEDDED_PG_DIR", "some/dir")
    assert Settings(_env_file=None).embedded_pg_dir == PROJECT_ROOT / "some/dir"


def test_invalid_values_give_one_line_naming_each(env):
    env.setenv("POSTGRES_PORT", "99999")
    env.setenv("DB_POOL_SIZE", "abc")
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    line = settings_error_line(info.value)
    assert "\n" not in line
    assert "POSTGRES_PORT" in line and "DB_POOL_SIZE" in line


def test_read_settings_turns_a_bad_value_into_a_settings_error(env):
    env.setenv("POSTGRES_PORT", "abc")
    with pytest.raises(SettingsError, match="POSTGRES_PORT"):
        read_settings(_env_file=None)


def test_missing_database_values_fail_only_where_a_database_is_needed(env):
    env.delenv("POSTGRES_USER")
    env.delenv("POSTGRES_PASSWORD")
    settings = Settings(_env_file=None)  # offline SQL, linting: no database needed
    with pytest.raises(SettingsError, match="POSTGRES_USER, POSTGRES_PASSWORD") as info:
        _ = settings.sync_url
    assert "\n" not in str(info.value)
    assert settings.startup_problem() == str(info.value)
    assert settings.for_database("postgresql://a:b@h:1/d").sync_url.host == "h"


def test_the_api_needs_only_its_own_credentials(env):
    """An API pod holds the app role's password, never the schema owner's."""
    env.delenv("POSTGRES_USER")
    env.delenv("POSTGRES_PASSWORD")
    env.setenv("POSTGRES_APP_USER", "api")
    env.setenv("POSTGRES_APP_PASSWORD", "s3cret")
    settings = Settings(_env_file=None)
    assert settings.startup_problem() is None
    url = settings.app_async_url
    assert (url.drivername, url.username, url.password, url.database) == (
        "postgresql+asyncpg",
        "api",
        "s3cret",
        "d",
    )
    env.setenv("POSTGRES_APP_PASSWORD", "")  # blank is unset
    assert "POSTGRES_APP_PASSWORD" in (Settings(_env_file=None).startup_problem() or "")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "not a url such as"),
        ("postgresql://u:p@h:abc/d", "not a url such as"),
        ("mysql://u:p@h/d", "must be a postgresql:// url"),
    ],
)
def test_database_url_is_checked_when_read(env, url, problem):
    env.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError, match=problem):
        read_settings(_env_file=None)


SECRET = "Zq9Secret@Pw_7731"


@pytest.mark.parametrize(
    "command",
    [("alembic_pg_guard", "migrate"), ("devtools.start",), ("src.serve",)],
    ids=["migrate", "start", "serve"],
)
def test_a_password_with_an_unencoded_at_is_refused_without_showing_it(command):
    """SQLAlchemy ends the password at its first '@': the rest was taken for the host and
    shown in "cannot reach the database at Pw_7731@127.0.0.1:<port>"."""
    url = f"postgresql://user:{SECRET}@127.0.0.1:{free_port()}/db"
    env = child_env(DATABASE_URL=url, API_PORT=str(free_port()))
    proc = run_python("-m", *command, cwd=PROJECT_ROOT, env=env, timeout=60)
    assert "unencoded '@'" in one_line_failure(proc)
    for part in SECRET.split("@"):
        assert part not in proc.stdout + proc.stderr


def test_env_example_documents_every_setting():
    documented = (PROJECT_ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert name.upper() in documented, name


def example_dotenv(**replace: str) -> str:
    """.env.example, with some lines replaced by `NAME=value` lines."""
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    for name, line in replace.items():
        lines = [line if row.startswith(f"{name}=") else row for row in lines]
    return "\n".join(lines) + "\n"


def test_the_environment_wins_over_dotenv_under_pipenv_run(tmp_path: Path):
    """`ENVIRONMENT=production pipenv run start` with the placeholder key in .env: pipenv
    loads .env over the environment, so this used to start as `local`."""
    project = pipenv_project(tmp_path / "project", example_dotenv())
    proc = pipenv_run(project, "start", ENVIRONMENT="production")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ENVIRONMENT=production needs a real API_KEY"), proc.stderr
    assert "embedded PostgreSQL" not in proc.stdout  # refused before starting anything


def test_a_plain_dotenv_line_is_refused_under_pipenv_run(tmp_path: Path):
    project = pipenv_project(tmp_path / "project", example_dotenv(ENVIRONMENT="ENVIRONMENT=local"))
    proc = pipenv_run(project, "migrate", ENVIRONMENT="production")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: .env: ENVIRONMENT is a plain NAME=value line"), proc.stderr
    assert "ENVIRONMENT=${ENVIRONMENT:-value}" in last


def test_setup_creates_dotenv_readable_by_its_owner_only(tmp_path: Path):
    project = pipenv_project(tmp_path / "project", "")
    (project / ".env").unlink()
    shutil.copy2(PROJECT_ROOT / ".env.example", project / ".env.example")
    # setup's .env step alone: the install step needs the network and a full venv.
    script = next(
        line.strip()
        for line in (PROJECT_ROOT / "Pipfile").read_text().splitlines()
        if "cp .env.example .env" in line
    )
    subprocess.run(["bash", "-c", script], cwd=project, check=True, capture_output=True)
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600

"""The one place settings are read: the environment, then `.env` at the project root.

Each entry point (the app, `migrate`, the developer tools, the test session) calls
`read_settings()` once and passes the result down; nothing else reads the environment.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from src.cli import CommandFailure, settings_error_line

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# The value .env.example ships with: fine on a laptop, refused in production.
PLACEHOLDER_API_KEY = "local-dev-key-change-me"
DATABASE_FIELDS = ("postgres_user", "postgres_password", "postgres_db")


class SettingsError(CommandFailure):
    """Settings that cannot work: one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Required (or DATABASE_URL) only by what connects: offline SQL and linting need none.
    postgres_user: str | None = Field(default=None, min_length=1)
    postgres_password: SecretStr | None = None
    postgres_db: str | None = Field(default=None, min_length=1)
    postgres_host: str = "localhost"
    postgres_port: int = Field(default=5555, ge=1, le=65535)
    # Overrides the five POSTGRES_* values when set (any postgresql:// driver suffix).
    database_url: str | None = None
    # The tests' and `check-drift --configured-db`'s database instead of a throwaway one.
    test_database_url: str | None = None

    # Where `pipenv run start`/`db` keep the embedded cluster (git-ignored).
    embedded_pg_dir: Path = PROJECT_ROOT / ".pgdata"

    # Migration safety: how long to wait for another migrator, and per-statement limits
    # inside each migration transaction (0 disables a limit).
    migration_lock_wait_seconds: float = Field(default=120, gt=0)
    migration_lock_timeout_ms: int = Field(default=5_000, ge=0)
    migration_statement_timeout_ms: int = Field(default=300_000, ge=0)

    environment: Literal["local", "test", "production"] = "local"
    # Required in the X-API-Key header of POST/PATCH/DELETE. Reads stay public.
    api_key: SecretStr | None = None
    # Larger request bodies get 413 before any parsing.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The app's connection pool (per process); see docs/performance.md for the defaults.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # Ping each pooled connection (one round trip) before a request uses it.
    db_pool_pre_ping: bool = False

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8765, ge=1, le=65535)

    @field_validator("embedded_pg_dir")
    @classmethod
    def _relative_to_project(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path

    @field_validator("database_url", "test_database_url")
    @classmethod
    def _parseable_url(cls, value: str | None) -> str | None:
        if value:
            try:
                url = make_url(value)
            except (ArgumentError, ValueError):
                raise ValueError("not a URL such as postgresql://user:pw@host:5432/db") from None
            if not url.drivername.startswith("postgresql"):
                raise ValueError(f"must be a postgresql:// URL, not {url.drivername}://")
        return value

    def _url(self, drivername: str) -> URL:
        if self.database_url:
            return make_url(self.database_url).set(drivername=drivername)
        missing = [name.upper() for name in DATABASE_FIELDS if getattr(self, name) is None]
        if missing:
            raise SettingsError(
                f"no database configured: set {', '.join(missing)} (or DATABASE_URL) "
                "in .env or the environment; see .env.example (pipenv run setup copies it)"
            )
        assert self.postgres_password is not None
        return URL.create(
            drivername,
            username=self.postgres_user,
            password=self.postgres_password.get_secret_value(),
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_db,
        )

    @property
    def async_url(self) -> URL:
        """The app's URL: asyncpg."""
        return self._url("postgresql+asyncpg")

    @property
    def sync_url(self) -> URL:
        """Alembic's URL: psycopg2, same database."""
        return self._url("postgresql+psycopg2")

    def for_database(self, url: str | URL) -> "Settings":
        """These settings, pointed at another database (a throwaway cluster, a test one)."""
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        return self.model_copy(update={"database_url": url})

    def startup_problem(self) -> str | None:
        """Why the app must not start with these settings, if it must not."""
        try:
            _ = self.sync_url
        except SettingsError as exc:
            return str(exc)
        if self.environment != "production":
            return None
        key = self.api_key.get_secret_value() if self.api_key else ""
        if not key or key == PLACEHOLDER_API_KEY:
            return "ENVIRONMENT=production needs a real API_KEY (not empty, not the placeholder)"
        if len(key) < 16:
            return "ENVIRONMENT=production needs an API_KEY of at least 16 characters"
        return None

    @property
    def db_is_local(self) -> bool:
        """Only a loopback database may be replaced by the embedded one."""
        return (self.sync_url.host or "localhost") in LOOPBACK_HOSTS


def env_for_url(url: str) -> dict[str, str]:
    """Environment variables that point a child process's settings at one database."""
    parsed = make_url(url)
    return {
        "DATABASE_URL": url,
        "POSTGRES_USER": parsed.username or "",
        "POSTGRES_PASSWORD": parsed.password or "",
        "POSTGRES_DB": parsed.database or "",
        "POSTGRES_HOST": parsed.host or "localhost",
        "POSTGRES_PORT": str(parsed.port or 5432),
    }


def read_settings(**overrides: object) -> Settings:
    """The environment and `.env`, validated; a bad value is one SettingsError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(settings_error_line(exc)) from None

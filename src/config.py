"""The one place settings are read: the environment, then `.env`. Each entry point calls
`read_settings()` once and passes the result down."""

import os
import re
import string
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from src.cli import CommandFailure, settings_error_line
from src.tls import LIBPQ_TLS_KEYS, SSL_MODES, SslMode

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# The value .env.example ships with: fine on a laptop, refused in production.
PLACEHOLDER_API_KEY = "local-dev-key-change-me"
# A production API_KEY: what secrets.token_urlsafe / token_hex produce, of real length.
API_KEY_MIN_LENGTH = 32
API_KEY_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")
API_KEY_MIN_DISTINCT = 10
API_KEY_HOWTO = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
DATABASE_FIELDS = ("postgres_user", "postgres_password", "postgres_db")
# Required when set: an empty one is refused (or, for the URLs, ignored), not unset.
BLANK_IS_AN_ERROR = frozenset(
    {
        "postgres_user",
        "postgres_password",
        "postgres_db",
        "database_url",
        "test_database_url",
        "api_key",
    }
)
# OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER values this project installs exporters for.
OTEL_EXPORTERS = ("otlp", "console", "none")


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
    # The API's own role (DML only), kept by the migration runner; unset: the schema owner.
    postgres_app_user: str | None = Field(default=None, min_length=1)
    postgres_app_password: SecretStr | None = None
    # TLS, with libpq's names and meanings (DATABASE_URL's query string wins).
    postgres_sslmode: SslMode | None = None
    postgres_sslrootcert: str | None = None
    postgres_sslcert: str | None = None
    postgres_sslkey: str | None = None
    # Overrides the five POSTGRES_* values when set (any postgresql:// driver suffix).
    database_url: str | None = None
    # The API's own address (e.g. PgBouncer); migrations and tools never use it.
    app_database_url: str | None = None
    # APP_DATABASE_URL is a transaction pooler: no prepared-statement caches (production.md).
    db_transaction_pooler: bool = False
    # The tests' and `check-drift --configured-db`'s database instead of a throwaway one.
    test_database_url: str | None = None

    # Where `pipenv run start`/`db` keep the embedded cluster (git-ignored).
    embedded_pg_dir: Path = PROJECT_ROOT / ".pgdata"

    # Migration safety (alembic-pg-guard's settings; 0 disables a limit).
    migration_lock_wait_seconds: float = Field(default=120, gt=0)
    # Short: every query on a table queues behind a migration's waiting ALTER.
    migration_lock_timeout_ms: int = Field(default=200, ge=0)
    migration_statement_timeout_ms: int = Field(default=300_000, ge=0)
    # For one `alembic-revision` run: write a drop + add the rename guard would refuse.
    alembic_allow_drop_add: bool = False
    # Retries of a revision cancelled by lock_timeout, after a jittered doubling delay,
    # bounded by a count and a total time.
    migration_lock_retries: int = Field(default=50, ge=0)
    migration_lock_retry_delay_seconds: float = Field(default=0.5, ge=0)
    migration_lock_retry_total_seconds: float = Field(default=120, ge=0)
    # CREATE/DROP INDEX CONCURRENTLY's own lock_timeout (they wait for older transactions).
    migration_concurrent_index_timeout_ms: int = Field(default=600_000, ge=0)

    environment: Literal["local", "test", "production"] = "local"
    # Required in the X-API-Key header of POST/PATCH/DELETE. Reads stay public.
    api_key: SecretStr | None = None
    # Larger request bodies get 413 before any parsing.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The HTTP edge (src/serve.py, docs/edge.md): 431, 408, idle keep-alive, a fast 503.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    request_read_timeout_seconds: float = Field(default=10, gt=0)
    keep_alive_timeout_seconds: float = Field(default=5, gt=0)
    max_concurrent_requests: int = Field(default=100, ge=1)
    # On SIGTERM, how long requests in flight and open connections may take to finish
    # (src/drain.py); an orchestrator's grace period (Kubernetes') must be longer.
    drain_timeout_seconds: float = Field(default=20, gt=0)
    # Open connections per process (idle keep-alive ones too); past it a canned 503.
    max_connections: int = Field(default=256, ge=1)
    # The app's connection pool (per process); see docs/performance.md for the defaults.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # Ping each pooled connection (one round trip) before a request uses it.
    db_pool_pre_ping: bool = False

    # Each process's response cache (docs/cache.md); its LISTEN goes to
    # CACHE_LISTEN_DATABASE_URL when APP_DATABASE_URL is a transaction pooler.
    cache_enabled: bool = True
    cache_listen_database_url: str | None = None
    cache_max_mb: int = Field(default=64, ge=1)

    # Logs: JSON lines (one access line per request, with its request ID) or text.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # OpenTelemetry (src/telemetry.py): these decide the switch, with the spec's meanings;
    # the SDK reads every other OTEL_* itself.
    otel_sdk_disabled: bool = False
    otel_traces_exporter: str | None = None
    otel_metrics_exporter: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_metrics_endpoint: str | None = None
    # Only OTLP over HTTP (protobuf) is installed: the spec's default, a collector's :4318.
    otel_exporter_otlp_protocol: Literal["http/protobuf"] | None = None
    otel_exporter_otlp_traces_protocol: Literal["http/protobuf"] | None = None
    otel_exporter_otlp_metrics_protocol: Literal["http/protobuf"] | None = None

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8765, ge=1, le=65535)

    @field_validator("embedded_pg_dir")
    @classmethod
    def _relative_to_project(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """An empty variable unsets an optional setting (those in BLANK_IS_AN_ERROR excepted)."""
        optional = cls.model_fields[info.field_name].default is None
        return (
            None if value == "" and optional and info.field_name not in BLANK_IS_AN_ERROR else value
        )

    @field_validator("otel_sdk_disabled", mode="before")
    @classmethod
    def _only_true_disables(cls, value: object) -> object:
        """The spec: only "true" (any case) disables the SDK; any other value does not."""
        return value.strip().lower() == "true" if isinstance(value, str) else value

    @field_validator("otel_traces_exporter", "otel_metrics_exporter")
    @classmethod
    def _known_exporters(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = {name.strip() for name in value.split(",")} - set(OTEL_EXPORTERS)
            if unknown:
                given, known = ", ".join(sorted(unknown)), ", ".join(OTEL_EXPORTERS)
                raise ValueError(f"{given}: not one of {known} (comma-separated)")
        return value

    @field_validator(
        "database_url", "test_database_url", "app_database_url", "cache_listen_database_url"
    )
    @classmethod
    def _parseable_url(cls, value: str | None) -> str | None:
        if value:
            if value.count("@") > 1:  # parsed, its password would end at the first @
                raise ValueError("has an unencoded '@' in its user or password: write it as %40")
            try:
                url = make_url(value)
            except (ArgumentError, ValueError):
                raise ValueError("not a URL such as postgresql://user:pw@host:5432/db") from None
            if not url.drivername.startswith("postgresql"):
                raise ValueError(f"must be a postgresql:// URL, not {url.drivername}://")
            mode = url.query.get("sslmode")
            if mode is not None and mode not in SSL_MODES:
                raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}")
            if "ssl" in url.query:
                raise ValueError("use libpq's sslmode=..., which both drivers get, not ssl=...")
        return value

    @property
    def tls(self) -> dict[str, str]:
        """libpq's TLS parameters: DATABASE_URL's query, else the POSTGRES_SSL* settings."""
        return self._tls_of(self.database_url)

    @property
    def app_tls(self) -> dict[str, str]:
        """The API's TLS parameters: APP_DATABASE_URL's query when it is set."""
        return self._tls_of(self.app_database_url or self.database_url)

    @property
    def cache_listen_tls(self) -> dict[str, str]:
        """The cache listener's TLS parameters: its own URL's query, else the API's."""
        url = self.cache_listen_database_url or self.app_database_url or self.database_url
        return self._tls_of(url)

    def _tls_of(self, url: str | None) -> dict[str, str]:
        if url:
            query = make_url(url).query
            given = {key: query[key] for key in LIBPQ_TLS_KEYS if isinstance(query.get(key), str)}
            if given:
                return given
        values = {key: getattr(self, f"postgres_{key}") for key in LIBPQ_TLS_KEYS}
        return {key: value for key, value in values.items() if value is not None}

    def _url(
        self, drivername: str, user: str | None = None, password: SecretStr | None = None
    ) -> URL:
        """The database URL for `drivername`, logging in as `user` if given (else the owner);
        psycopg2's carries the TLS parameters, asyncpg's none (src/tls.py passes them)."""
        url = self._login_url(drivername, user, password).difference_update_query(LIBPQ_TLS_KEYS)
        if drivername.endswith("psycopg2") and self.tls:
            url = url.update_query_dict(self.tls)
        return url

    def _login_url(self, drivername: str, user: str | None, password: SecretStr | None) -> URL:
        if self.database_url:
            url = make_url(self.database_url).set(drivername=drivername)
            if user is None:
                return url
            return url.set(username=user, password=password and password.get_secret_value())
        owner = user is None
        fields = DATABASE_FIELDS if owner else ("postgres_db", "postgres_app_password")
        missing = [name.upper() for name in fields if getattr(self, name) is None]
        if missing:
            raise SettingsError(
                f"no database configured: set {', '.join(missing)} (or DATABASE_URL) "
                "in .env or the environment; see .env.example (pipenv run setup copies it)"
            )
        login = self.postgres_password if owner else password
        assert login is not None
        return URL.create(
            drivername,
            username=self.postgres_user if owner else user,
            password=login.get_secret_value(),
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

    @property
    def app_async_url(self) -> URL:
        """The API's URL: asyncpg, APP_DATABASE_URL when set, else as POSTGRES_APP_USER when
        set (it needs no owner password), else the owner's."""
        if self.app_database_url:
            return (
                make_url(self.app_database_url)
                .set(drivername="postgresql+asyncpg")
                .difference_update_query(LIBPQ_TLS_KEYS)
            )
        if self.postgres_app_user is None:
            return self.async_url
        return self._url("postgresql+asyncpg", self.postgres_app_user, self.postgres_app_password)

    @property
    def cache_listen_url(self) -> URL:
        """The cache listener's URL (asyncpg): CACHE_LISTEN_DATABASE_URL, else the API's."""
        if self.cache_listen_database_url:
            return (
                make_url(self.cache_listen_database_url)
                .set(drivername="postgresql+asyncpg")
                .difference_update_query(LIBPQ_TLS_KEYS)
            )
        return self.app_async_url

    def for_database(self, url: str | URL) -> "Settings":
        """These settings, pointed at another database (a throwaway cluster, a test one)."""
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        return self.model_copy(update={"database_url": url})

    def startup_problem(self) -> str | None:
        """Why the app must not start with these settings, if it must not."""
        try:
            _ = self.app_async_url
        except SettingsError as exc:
            return str(exc)
        for key in ("sslrootcert", "sslcert", "sslkey"):
            path = self.app_tls.get(key)
            if path and not os.access(path, os.R_OK):
                setting = f"POSTGRES_{key.upper()} or {key}= in the URL"
                return f"TLS {key} {path!r} cannot be read ({setting})"
        if self.environment != "production":
            return None
        return api_key_problem(self.api_key.get_secret_value() if self.api_key else "")

    @property
    def db_is_local(self) -> bool:
        """Only a loopback database may be replaced by the embedded one."""
        return (self.sync_url.host or "localhost") in LOOPBACK_HOSTS


def api_key_problem(key: str) -> str | None:
    """Why `key` is not a production API_KEY: it must look like a generated token."""
    if not key or key == PLACEHOLDER_API_KEY:
        return f"ENVIRONMENT=production needs a real API_KEY, not the placeholder; {API_KEY_HOWTO}"
    if (
        len(key) < API_KEY_MIN_LENGTH
        or not set(key) <= API_KEY_ALPHABET
        or len(set(key)) < API_KEY_MIN_DISTINCT
    ):
        return (
            f"ENVIRONMENT=production needs an API_KEY of at least {API_KEY_MIN_LENGTH} "
            f"random letters, digits, '-' or '_' ({len(key)} characters given, "
            f"{len(set(key))} distinct); {API_KEY_HOWTO}"
        )
    return None


# NAME=${NAME:-value} (or ${NAME-value}): the environment's NAME wins, even under pipenv.
ENVIRONMENT_FIRST = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?-.*\}$")


def pipenv_override_problem(env_file: Path) -> str | None:
    """`pipenv run` loads .env *over* the environment (dotenv override=True), so a plain
    `NAME=value` line there would beat `NAME=x pipenv run ...`. Lines written as
    NAME=${NAME:-value} keep the environment first; refuse any other setting line."""
    if not os.environ.get("PIPENV_ACTIVE") or os.environ.get("PIPENV_DONT_LOAD_ENV"):
        return None
    env_file = Path(os.environ.get("PIPENV_DOTENV_LOCATION") or env_file)
    if not env_file.is_file():
        return None
    names = {name.upper() for name in Settings.model_fields}
    for name, raw in dotenv_values(env_file, interpolate=False).items():
        if name.upper() not in names or raw is None:
            continue
        match = ENVIRONMENT_FIRST.match(raw)
        if not match or match["name"] != name:
            return (
                f"{env_file.name}: {name} is a plain NAME=value line, which `pipenv run` "
                f"puts over the environment; write it as {name}=${{{name}:-value}} "
                "(as .env.example does), or set PIPENV_DONT_LOAD_ENV=1"
            )
    return None


def read_settings(**overrides: object) -> Settings:
    """The environment and `.env`, validated; a bad value is one SettingsError line."""
    env_file = Settings.model_config.get("env_file")
    if isinstance(env_file, Path) and (problem := pipenv_override_problem(env_file)):
        raise SettingsError(problem)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(settings_error_line(exc)) from None

"""What a project hands the guard: its database, its limits, its API role, its words.

A project builds one `GuardSettings` per entry point (from its own settings) and either
passes it (`attach(cfg, settings)`) or names a function returning it in alembic.ini:

    [alembic_pg_guard]
    settings = myproject.migrations:guard_settings
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import URL, make_url

from alembic_pg_guard._errors import GuardError

# Arbitrary but fixed: every migrator of one database must use the same key.
DEFAULT_LOCK_ID = 7_316_092_511_004_761_345


# SQLAlchemy and libpq end a URL's password at its first '@': the rest would be taken for
# the host, and shown in every message naming it. Refused, never guessed (libpq would not).
UNENCODED_AT = "has an unencoded '@' in its user or password: percent-encode it as %40"


def sync_url(value: URL | str) -> URL:
    """`value` with psycopg2 as its driver, which the guard runs on (postgresql://,
    +asyncpg and +psycopg URLs alike); anything else is a one-line GuardError (that never
    shows the URL: it holds a password)."""
    if isinstance(value, str) and value.count("@") > 1:
        raise GuardError(f"the database URL {UNENCODED_AT}")
    try:
        url = make_url(value) if isinstance(value, str) else value
    except Exception:  # sqlalchemy raises ArgumentError or ValueError for a malformed URL
        raise GuardError("the database URL is not one like postgresql://user:pw@host/db") from None
    if "@" in (url.host or ""):
        raise GuardError(f"the database URL {UNENCODED_AT}")
    if not url.drivername.startswith("postgresql"):
        raise GuardError(
            f"the database URL is {url.drivername}://..., not postgresql://: the guard "
            "migrates PostgreSQL (set sqlalchemy.url or DATABASE_URL)"
        )
    return url.set(drivername="postgresql+psycopg2")


@dataclass(frozen=True)
class AppRole:
    """The API's least-privilege login role, created and granted by the runner."""

    name: str
    # None: the role must already exist; it is granted, never created.
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Hints:
    """How this project's users do things, as the one-line errors name them."""

    alembic: str = "alembic"  # how to run alembic, e.g. "pipenv run alembic"
    revision: str = "alembic revision --autogenerate -m '...'"
    migrate: str = "python -m alembic_pg_guard migrate"
    verify: str = "python -m alembic_pg_guard verify"
    check_compat: str = "python -m alembic_pg_guard compat"
    docs: str = "the alembic-pg-guard README"
    models: str = "the models"
    login: str = "check the user and password of the database URL"
    database: str = "check the database name of the database URL"
    unreachable: str = "is PostgreSQL running there? Check the database URL's host and port"
    tls: str = "check sslmode and sslrootcert of the database URL"
    lock_wait: str = "raise lock_wait_seconds"
    allow_drop_add: str = "alembic -x allow_drop_add=1 revision ..."
    setup: str = "install the project's development dependencies"
    app_user_setting: str = "the app role"  # the setting that names it, e.g. POSTGRES_APP_USER
    app_password_setting: str = "its password"  # noqa: S105 - a setting's name
    pooler: str = "point only the application at the pooler"


@dataclass(frozen=True)
class GuardSettings:
    """Settings of one run. `url` logs in as the schema owner (psycopg2); None for
    offline work (`--sql`, linting), with `no_url` saying how to configure one."""

    url: URL | None = None
    no_url: str = "no database configured"
    # The history gate's and `drift --configured-db`'s database; default: `url`.
    gate_url: URL | None = None
    app_role: AppRole | None = None
    lock_id: int = DEFAULT_LOCK_ID
    # How long to wait for another migrator; per-statement limits (0 disables one).
    lock_wait_seconds: float = 120
    # Every query on a table queues behind a waiting ALTER for up to lock_timeout: short.
    lock_timeout_ms: int = 200
    statement_timeout_ms: int = 300_000
    # A revision cancelled by lock_timeout is retried after a jittered delay that doubles
    # (capped), until lock_retries retries or lock_retry_total_seconds have passed.
    lock_retries: int = 50
    lock_retry_delay_seconds: float = 0.5
    lock_retry_total_seconds: float = 120
    # CREATE/DROP INDEX CONCURRENTLY wait for every older transaction: their own limit.
    concurrent_index_timeout_ms: int = 600_000
    # For one autogenerate run: write a drop + add that the rename guard would refuse.
    allow_drop_add: bool = False
    hints: Hints = field(default_factory=Hints)

    def __post_init__(self) -> None:
        for name in ("url", "gate_url"):
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, sync_url(value))

    @property
    def sync_url(self) -> URL:
        """The owner's URL; a GuardError saying how to configure one when there is none."""
        if self.url is None:
            raise GuardError(self.no_url)
        return self.url

    def for_database(self, url: URL | str, *, app_role: AppRole | None = None) -> GuardSettings:
        """These settings on another database (a throwaway one), with its own app role."""
        return replace(self, url=sync_url(url), gate_url=None, app_role=app_role)

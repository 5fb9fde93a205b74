"""This project's side of alembic-pg-guard: its settings as the guard's, and alembic.ini.

alembic.ini names `guard_settings` (its [alembic_pg_guard] section), so the guard's
commands and plain `alembic` read this project's settings once, as every entry point does.
"""

from alembic.config import Config
from alembic_pg_guard import AppRole, GuardError, GuardSettings, Hints, attach
from alembic_pg_guard import upgrade as guard_upgrade

from src.cli import CommandFailure
from src.config import PROJECT_ROOT, Settings, read_settings

# How this project's users do things, as the guard's one-line errors name them.
HINTS = Hints(
    alembic="pipenv run alembic",
    revision="pipenv run alembic-revision -m '...'",
    migrate="pipenv run migrate",
    check_compat="pipenv run check-compat",
    docs="docs/migrations.md",
    models="src/models.py",
    login=(
        "check POSTGRES_USER/POSTGRES_PASSWORD (an embedded cluster keeps the password it was "
        "created with: pipenv run db-reset recreates it, deleting its data)"
    ),
    database="check POSTGRES_DB",
    unreachable=(
        "start it with `pipenv run db` (embedded) or `docker compose up -d db`, or check "
        "POSTGRES_HOST/POSTGRES_PORT"
    ),
    tls="check POSTGRES_SSLMODE and POSTGRES_SSLROOTCERT (or sslmode= in DATABASE_URL)",
    lock_wait="raise MIGRATION_LOCK_WAIT_SECONDS",
    allow_drop_add="ALEMBIC_ALLOW_DROP_ADD=1 (or alembic -x allow_drop_add=1 revision ...)",
    setup="pipenv run setup",
    app_user_setting="POSTGRES_APP_USER",
    app_password_setting="POSTGRES_APP_PASSWORD",  # noqa: S106 - its name
    pooler=(
        "point only the API at the pooler (APP_DATABASE_URL); migrations go to PostgreSQL "
        "itself (DATABASE_URL / POSTGRES_HOST and POSTGRES_PORT)"
    ),
)


def guard_settings(settings: Settings | None = None) -> GuardSettings:
    """`settings` (else the environment's, read here once) as the guard's."""
    try:
        settings = settings or read_settings()
        url, no_url = settings.sync_url, ""
    except CommandFailure as exc:
        if settings is None:
            raise GuardError(str(exc)) from None
        url, no_url = None, str(exc)
    role = None
    if settings.postgres_app_user is not None:
        password = settings.postgres_app_password
        role = AppRole(settings.postgres_app_user, password and password.get_secret_value())
    return GuardSettings(
        url=url,
        no_url=no_url,
        gate_url=settings.test_database_url,
        app_role=role,
        lock_wait_seconds=settings.migration_lock_wait_seconds,
        lock_timeout_ms=settings.migration_lock_timeout_ms,
        statement_timeout_ms=settings.migration_statement_timeout_ms,
        lock_retries=settings.migration_lock_retries,
        lock_retry_delay_seconds=settings.migration_lock_retry_delay_seconds,
        concurrent_index_timeout_ms=settings.migration_concurrent_index_timeout_ms,
        allow_drop_add=settings.alembic_allow_drop_add,
        hints=HINTS,
    )


def alembic_config(settings: Settings | None = None) -> Config:
    """alembic.ini with absolute paths; `settings`, if given, reach env.py through it."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    return cfg if settings is None else attach(cfg, guard_settings(settings))


def upgrade(settings: Settings, target: str = "head") -> str:
    """The guard's locked runner on this project's history: `start`, the tests, the bench."""
    return guard_upgrade(alembic_config(settings), target)

"""This project's side of alembic-pg-guard: its settings as the guard's (alembic.ini's
[alembic_pg_guard] names `guard_settings`, its hints live there too), alembic.ini itself."""

from alembic.config import Config
from alembic_pg_guard import AppRole, GuardError, GuardSettings, attach
from alembic_pg_guard import upgrade as guard_upgrade

from src.cli import CommandFailure
from src.config import PROJECT_ROOT, Settings, read_settings


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
        lock_retry_total_seconds=settings.migration_lock_retry_total_seconds,
        concurrent_index_timeout_ms=settings.migration_concurrent_index_timeout_ms,
        allow_drop_add=settings.alembic_allow_drop_add,
    )


def alembic_config(settings: Settings | None = None) -> Config:
    """alembic.ini with absolute paths; `settings`, if given, reach env.py through it."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    return cfg if settings is None else attach(cfg, guard_settings(settings))


def upgrade(settings: Settings, target: str = "head") -> str:
    """The guard's locked runner on this project's history: `start`, the tests, the bench."""
    return guard_upgrade(alembic_config(settings), target)

"""alembic-pg-guard: Alembic migrations on PostgreSQL that are locked, time-limited,
history-checked and gated before they reach a database. The public API is `__all__`;
every `_module` is private."""

from alembic_pg_guard._config import attach, load_config, settings_of
from alembic_pg_guard._env import run_env
from alembic_pg_guard._errors import GuardError, fail_on_errors
from alembic_pg_guard._gates import GATES, run_gates
from alembic_pg_guard._history import TABLE as HISTORY_TABLE
from alembic_pg_guard._history import CodeHistory, code_history, db_heads, ready_problem
from alembic_pg_guard._notify import NotifyTriggers
from alembic_pg_guard._runner import migration_lock, sync_engine, upgrade
from alembic_pg_guard._settings import AppRole, GuardSettings, Hints

__version__ = "0.1.0"

__all__ = [
    "GATES",
    "HISTORY_TABLE",
    "AppRole",
    "CodeHistory",
    "GuardError",
    "GuardSettings",
    "Hints",
    "NotifyTriggers",
    "__version__",
    "attach",
    "code_history",
    "db_heads",
    "fail_on_errors",
    "load_config",
    "migration_lock",
    "ready_problem",
    "run_env",
    "run_gates",
    "settings_of",
    "sync_engine",
    "upgrade",
]

"""What a rehearsal needs from the project: its app and its load."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_pg_guard._settings import AppRole


@dataclass(frozen=True)
class RehearsalTarget:
    """What a rehearsal serves and loads: the project's app and its request mix.

    `app_command` runs the app on a port given by `{port}`, with the environment that
    `app_env(database_url, app_role, api_key)` returns; `plan(dsn, api_key, path)` writes
    what the load addresses (or raises GuardError when this schema cannot take it);
    `load_command` runs the open-loop load: it gets `--url --rate --plan --out`, writes one
    JSON line [intended, done, kind, status] per request to --out, and stops on SIGTERM.
    """

    app_command: Sequence[str]
    app_env: Callable[[str, AppRole, str], dict[str, str]]
    plan: Callable[[str, str, Path], None]
    load_command: Sequence[str]
    health_path: str = "/health"

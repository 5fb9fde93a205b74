"""What a rehearsal needs from the project: its app and its load."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

    `rehearse --rolling` serves the way production does: `serve_command` (default
    `app_command`), run in each release's checkout, with `serve_env` added to `app_env`'s
    (`{port}` and `{drain_timeout}` filled in); it drains on SIGTERM, and `ready_path` is
    its readiness probe.
    """

    app_command: Sequence[str]
    app_env: Callable[[str, AppRole, str], dict[str, str]]
    plan: Callable[[str, str, Path], None]
    load_command: Sequence[str]
    health_path: str = "/health"
    serve_command: Sequence[str] | None = None
    serve_env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/ready"

"""What `pipenv run rehearse` (alembic-pg-guard) serves and loads: this project's API
(uvicorn src.main:app) under the /country request mix of loadgen.py (docs/rehearse.md);
`rehearse --rolling` serves each release as production does (python -m src.serve, which
drains on SIGTERM). alembic.ini names `target` as [alembic_pg_guard] rehearse_target."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psycopg2
from alembic_pg_guard import AppRole, GuardError
from alembic_pg_guard.rehearse import RehearsalTarget

from devtools.embedded_pg import env_for_url

# ISO 3166 user-assigned codes: never loaded from ISO data, so the writes can create them.
FREE_ALPHA2 = [f"X{c}" for c in "ABCDEFGHIJLMNOPQRSTUVWYZ"] + [f"Q{c}" for c in "MNOPQRSTUVWXYZ"]


def app_env(database_url: str, role: AppRole, api_key: str) -> dict[str, str]:
    env = {**os.environ, **env_for_url(database_url), "ENVIRONMENT": "test", "API_KEY": api_key}
    env["POSTGRES_APP_USER"] = role.name
    env["POSTGRES_APP_PASSWORD"] = role.password or ""
    env.pop("PIPENV_ACTIVE", None)  # the child reads its settings from this environment
    return env


def load_plan(dsn: str, api_key: str, path: Path) -> None:
    """The codes the load reads, and free user-assigned codes its writes create."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('country') IS NOT NULL")
            if not cur.fetchone()[0]:
                raise GuardError(
                    "the load addresses /country, but this revision has no country table: "
                    "start from a later revision (--from)"
                )
            # to_jsonb: alpha3 is NULL, not an error, at revisions before it exists
            cur.execute("SELECT alpha2, to_jsonb(c) ->> 'alpha3' FROM country AS c")
            rows = cur.fetchall()
    finally:
        conn.close()
    codes = sorted(a2 for a2, _ in rows)
    taken = {c for row in rows for c in row if c}
    free = [(a2, f"{a2}X") for a2 in FREE_ALPHA2 if a2 not in taken and f"{a2}X" not in taken]
    path.write_text(json.dumps({"codes": codes, "free": free, "api_key": api_key}))


target = RehearsalTarget(
    app_command=[
        *(sys.executable, "-m", "uvicorn", "src.main:app", "--no-access-log"),
        *("--host", "127.0.0.1", "--port", "{port}"),
    ],
    app_env=app_env,
    plan=load_plan,
    load_command=[sys.executable, "-m", "devtools.rehearse.loadgen"],
    serve_command=[sys.executable, "-m", "src.serve"],
    serve_env={
        "API_HOST": "127.0.0.1",
        "API_PORT": "{port}",
        "DRAIN_TIMEOUT_SECONDS": "{drain_timeout}",
    },
    ready_path="/ready",
)

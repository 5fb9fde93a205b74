"""Liveness and readiness for orchestrators (Docker healthchecks, Kubernetes probes)."""

from alembic_pg_guard import CodeHistory, ready_problem
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from src.errors import database_unavailable, error_response, log_refused_login
from src.kit.deps import database
from src.kit.openapi import errors

router = APIRouter(tags=["health"])
# /health cannot answer 503: it reads no database, and the edge's limit never refuses it.
LIVENESS_RESPONSES = {code: doc for code, doc in errors().items() if code != 503}


@router.get("/health", responses=LIVENESS_RESPONSES)
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database, so a database outage
    does not get healthy API containers restarted."""
    return {"status": "ok"}


# ALTER ROLE ... SET and ALTER ROLE ... IN DATABASE ... SET, which a role may run on itself.
ROLE_SETTINGS = text(
    "SELECT c FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, "
    "unnest(s.setconfig) c WHERE r.rolname = :role AND s.setdatabase IN "
    "(0, (SELECT oid FROM pg_database WHERE datname = current_database())) ORDER BY c LIMIT 1"
)


def _readiness(code: CodeHistory, role: str | None):
    """Why the database is not ready for the code, or None: its schema (alembic-pg-guard),
    then a setting of the API's own role (`migrate` gives it none, and resets any)."""

    def read(conn: Connection) -> str | None:
        heads = set(conn.scalars(text("SELECT version_num FROM alembic_version")))
        if problem := ready_problem(conn, code, heads):
            return problem
        setting = role and conn.scalar(ROLE_SETTINGS, {"role": role})
        if not setting:
            return None
        return f"role {role} has its own setting {setting}: run `pipenv run migrate` to reset it"

    return read


@router.get("/ready", responses=errors())
async def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers and applied the code's history (alembic-pg-guard:
    not one edited below its head). Its schema is the code's head, or ahead of it along
    that history: in a rolling deploy the old replicas stay ready once the new one migrates."""
    code: CodeHistory = request.app.state.code_history
    try:
        # Not through the gate: a loaded app keeps one pooled connection for this probe.
        role = request.app.state.settings.postgres_app_user
        problem = await database(request).probe(_readiness(code, role))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log_refused_login(request, exc)  # a probed-only replica says why it is not ready
        return database_unavailable("database unavailable")
    if problem:
        return error_response(503, problem)
    revision = ", ".join(sorted(code.heads))
    # Information only: with the cache bypassed or off, reads still answer correctly.
    cache = request.app.state.cache.state
    return JSONResponse({"status": "ready", "revision": revision, "cache": cache})

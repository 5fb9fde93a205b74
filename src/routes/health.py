"""Liveness and readiness for orchestrators (Docker healthchecks, Kubernetes probes)."""

from alembic_pg_guard import CodeHistory, ready_problem
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from src.errors import database_unavailable, error_response
from src.kit.deps import database
from src.kit.openapi import errors

router = APIRouter(tags=["health"])
# /health cannot answer 503: it reads no database, and ConcurrencyLimit never refuses it.
LIVENESS_RESPONSES = {code: doc for code, doc in errors().items() if code != 503}


@router.get("/health", responses=LIVENESS_RESPONSES)
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database, so a database outage
    does not get healthy API containers restarted."""
    return {"status": "ok"}


def _schema_state(code: CodeHistory):
    """The database's heads and, when they are the code's, why its history is not."""

    def read(conn: Connection) -> tuple[set[str], str | None]:
        heads = set(conn.scalars(text("SELECT version_num FROM alembic_version")))
        return heads, (ready_problem(conn, code, heads) if heads == code.heads else None)

    return read


@router.get("/ready", responses=errors())
async def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers, its schema is exactly the code's Alembic head, and
    it applied the code's history (alembic-pg-guard: not one edited below its head)."""
    code: CodeHistory = request.app.state.code_history
    code_heads = set(code.heads)
    try:
        # Not through the gate: a loaded app keeps one pooled connection for this probe.
        db_heads, edited = await database(request).probe(_schema_state(code))
    except (SQLAlchemyError, OSError, TimeoutError):
        return database_unavailable("database unavailable")
    if edited:
        return error_response(503, edited)
    if db_heads != code_heads:
        found = ", ".join(sorted(db_heads)) or "empty"
        expected = ", ".join(sorted(code_heads))
        return error_response(503, f"schema mismatch: database at {found}, code expects {expected}")
    revision = ", ".join(sorted(code_heads))
    # Information only: with the cache bypassed or off, reads still answer correctly.
    cache = request.app.state.cache.state
    return JSONResponse({"status": "ready", "revision": revision, "cache": cache})

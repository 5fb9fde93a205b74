"""Liveness and readiness for orchestrators (Docker healthchecks, Kubernetes probes)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from src.errors import database_unavailable, error_response
from src.routes.deps import database
from src.routes.openapi import errors

router = APIRouter(tags=["health"])


@router.get("/health", responses=errors())
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database, so a database outage
    does not get healthy API containers restarted."""
    return {"status": "ok"}


def _schema_heads(conn: Connection) -> set[str]:
    return set(conn.scalars(text("SELECT version_num FROM alembic_version")))


@router.get("/ready", responses=errors())
async def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers and its schema is exactly the code's Alembic head."""
    code_heads: set[str] = request.app.state.code_heads
    try:
        # Not through the gate: a loaded app keeps one pooled connection for this probe.
        db_heads = await database(request).probe(_schema_heads)
    except (SQLAlchemyError, OSError, TimeoutError):
        return database_unavailable("database unavailable")
    if db_heads != code_heads:
        found = ", ".join(sorted(db_heads)) or "empty"
        expected = ", ".join(sorted(code_heads))
        return error_response(503, f"schema mismatch: database at {found}, code expects {expected}")
    return JSONResponse({"status": "ready", "revision": ", ".join(sorted(code_heads))})

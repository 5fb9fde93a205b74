"""One error body for every failure: {"detail": <message>, "code": <slug>, "errors": [...]},
`errors` naming each field of a 422."""

import logging
import time
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, EmulatedDBAPIException, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "service_unavailable",
}


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    detail: str
    code: str
    errors: list[FieldError] | None = None


def error_response(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, headers=None
) -> JSONResponse:
    body = ErrorBody(detail=detail, code=STATUS_CODES.get(status, "error"), errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "field": ".".join(str(part) for part in err["loc"]),
            # Invalid JSON: FastAPI's msg is "JSON decode error", the reason is in ctx.
            "message": f"{err['msg']}: {err['ctx']['error']}"
            if err.get("type") == "json_invalid"
            else err["msg"],
        }
        for err in exc.errors()
    ]
    return error_response(422, "request validation failed", errors)


# SQLSTATEs that say "the database cannot serve right now", not "this request is wrong":
# connections (08), transient rollbacks (40), resources (53), shutting down (57P), system (58),
# a refused login (28: a wrong or rotated password, a dropped role, pg_hba.conf).
LOGIN_REFUSED = "28"
UNAVAILABLE_SQLSTATE_CLASSES = ("08", LOGIN_REFUSED, "40", "53", "57P", "58")
# A refused login lasts until an operator acts: said once per reason, again after this long.
LOGIN_REFUSED_RELOG_SECONDS = 60.0
UNAVAILABLE_SQLSTATES = {
    "25006",  # read_only_sql_transaction: a standby, or a primary demoted to one
    "57014",  # query_canceled: statement_timeout, or a cancel from an administrator
    "25P03",  # idle_in_transaction_session_timeout: the session is gone
}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, through SQLAlchemy's and asyncpg's wrappers."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(seen, attribute, None)
            if isinstance(code, str) and code:
                return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def is_database_outage(exc: BaseException) -> bool:
    """The database is unavailable (down, starting, stopping, full, read-only, unreachable)
    rather than the request or the code being wrong: decided by SQLSTATE when there is one."""
    code = sqlstate(exc)
    if code is not None:
        return code in UNAVAILABLE_SQLSTATES or code.startswith(UNAVAILABLE_SQLSTATE_CLASSES)
    if isinstance(exc, EmulatedDBAPIException) and exc.orig is not None:
        return is_database_outage(exc.orig)  # the driver's own error, as the pool raised it
    # asyncpg's InterfaceError (the reads' driver) as SQLAlchemy's, which wraps the same.
    if isinstance(
        exc, OperationalError | InterfaceError | PoolTimeoutError | asyncpg.InterfaceError
    ):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    return isinstance(exc, OSError | TimeoutError)


def database_unavailable(detail: str = "database unavailable, retry shortly") -> JSONResponse:
    """503 with Retry-After: clients and load balancers back off, then come back."""
    return error_response(503, detail, headers={"Retry-After": RETRY_AFTER_SECONDS})


def log_refused_login(request: Request, exc: BaseException) -> bool:
    """One error line naming the role when the database refuses the app's login (never
    per request: every request meets it), repeated per new reason or after a while."""
    if not (sqlstate(exc) or "").startswith(LOGIN_REFUSED):
        return False
    cause = getattr(exc, "orig", None) or exc
    reason = str(cause.__cause__ or cause).strip().partition("\n")[0]
    now, last = time.monotonic(), getattr(request.app.state, "login_refused", None)
    if last is None or last[0] != reason or now - last[1] >= LOGIN_REFUSED_RELOG_SECONDS:
        request.app.state.login_refused = (reason, now)
        role = request.app.state.settings.app_async_url.username
        logger.error(
            "the database refused the login of role %r (%s): answering 503 until it accepts; "
            "check POSTGRES_APP_USER and POSTGRES_APP_PASSWORD (or APP_DATABASE_URL)",
            role,
            reason,
        )
    return True


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_outage(exc):
        raise exc
    if not log_refused_login(request, exc):
        logger.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return database_unavailable()


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the JSON body, never plain text. Starlette re-raises `exc` after this response
    is sent, so the server logs the traceback."""
    return error_response(500, "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # The reads run on the driver (src/reads.py): asyncpg's errors, and the pool's checkout
    # raises the driver's (SQLAlchemy's emulated DBAPI errors) unwrapped.
    driver = (asyncpg.PostgresError, asyncpg.InterfaceError, EmulatedDBAPIException)
    for exc_type in (*driver, DBAPIError, PoolTimeoutError, OSError, TimeoutError):
        app.add_exception_handler(exc_type, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)

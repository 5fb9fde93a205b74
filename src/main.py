"""The FastAPI application: `uvicorn src.main:app`, or `create_app(settings)`; `app` is built
on first access (PEP 562), so importing this module reads no settings."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic_pg_guard import code_history
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Route

from src import errors
from src.cli import CommandFailure
from src.config import Settings, read_settings
from src.db import Database
from src.drain import Drain
from src.edge import Edge
from src.kit.cache import CacheHits, response_cache
from src.logs import configure_logging
from src.middleware import BodyGuard, MethodGuard
from src.migrations import alembic_config
from src.resources import CACHED_TABLES, RESOURCES
from src.routes import docs, health
from src.telemetry import Telemetry, from_settings

logger = logging.getLogger(__name__)

API_DESCRIPTION = """ISO 3166 countries and subdivisions. Writes need the X-API-Key header.

Every error has the same JSON body (`ErrorBody`). Beyond each operation's own statuses:
a method a path does not serve gets **405** with `Allow` listing the ones it does; an
unknown path (a trailing slash included: there are no redirects) gets **404**."""


def create_app(settings: Settings, *, telemetry: Telemetry | None = None) -> FastAPI:
    """`telemetry`: where spans and metrics go; by default the OTEL_* settings (often off)."""
    telemetry = telemetry or from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database = database = Database(settings)
        if telemetry:
            telemetry.instrument_database(database)
        if settings.postgres_app_user is None:
            logger.warning(
                "the API logs in as the schema owner: set POSTGRES_APP_USER and "
                "POSTGRES_APP_PASSWORD for a role that can only read and write rows"
            )
        app.state.code_history = code_history(alembic_config())
        # What exists now lives as long as the process: out of the GC's full collections,
        # which would stall every request in flight (docs/performance.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        cache.start()  # its LISTEN task
        try:
            yield
        finally:
            await cache.close()
            await database.dispose()
            if telemetry:
                telemetry.shutdown(app)

    # Swagger UI and ReDoc from the package (src/routes/docs.py); one URL per resource.
    app = FastAPIOffline(
        title="Country API",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        static_url=docs.STATIC_URL,
        redirect_slashes=False,
        # Traces and metrics are src/telemetry.py's (the maintained instrumentations, off
        # unless configured); FastAPI's own would look for global providers per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.cache = cache = response_cache(settings, CACHED_TABLES)
    # Last added runs first: the edge (request ID, headers, Host, the drain's and the
    # limit's 503s), 405, body guards, cache hits.
    if cache.off_reason is None:
        app.add_middleware(CacheHits, cache=cache)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    # One list feeds the method guard and the app: a router cannot be served but unguarded.
    routers = [*(resource.router for resource in RESOURCES), docs.router, health.router]
    own = [route for route in app.routes if isinstance(route, Route)]  # /openapi.json
    routes = [*own, *(route for router in routers for route in router.routes)]
    app.add_middleware(MethodGuard, routes=routes)
    # Set by the server's SIGTERM handler (src/drain.py): new requests get 503 from then on.
    app.state.drain = Drain()
    app.add_middleware(
        Edge,
        drain=app.state.drain,
        limit=settings.max_concurrent_requests,
        max_body_bytes=settings.max_body_bytes,
    )
    errors.install(app)
    for router in routers:
        app.include_router(router)
    if telemetry:
        telemetry.instrument_app(app)
    return app


def app_from_environment() -> FastAPI:
    """Settings from the environment; bad ones stop the process with one line."""
    try:
        settings = read_settings()
    except CommandFailure as exc:
        raise SystemExit(f"error: {exc}") from None
    if problem := settings.startup_problem():
        raise SystemExit(f"error: {problem}")
    configure_logging(settings)
    return create_app(settings)


def __getattr__(name: str) -> FastAPI:
    if name == "app":
        global app
        app = app_from_environment()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

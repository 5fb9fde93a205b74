"""The FastAPI application: `uvicorn src.main:app`."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from src import errors
from src.cli import settings_error_line
from src.config import Settings, get_settings
from src.db import create_engine, create_gate, transactional
from src.middleware import BodyGuard
from src.migrate import alembic_config, head_revisions
from src.routes import country, health


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        # One pool: reads use it as is (autocommit), writes in transactions.
        app.state.read_engine = engine
        app.state.engine = transactional(engine)
        app.state.gate = create_gate(settings)
        # What exists now (modules, routes, schemas, SQLAlchemy metadata) lives as long as the
        # process: keep it out of the cyclic GC's full collections, which otherwise walk it
        # all and stall every in-flight request for tens of milliseconds. Requests free their
        # objects by reference counting; with dozens in flight the default threshold (700)
        # ran a young collection every ~20 requests, 10_000 runs one every few thousand.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        app.state.code_heads = head_revisions(alembic_config())
        try:
            yield
        finally:
            await engine.dispose()

    # FastAPIOffline: /docs serves Swagger UI from the installed package, not a CDN.
    app = FastAPIOffline(
        title="Country API",
        version="1.0.0",
        description="ISO 3166 countries and subdivisions. Writes need the X-API-Key header.",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(country.router)
    return app


def app_from_environment() -> FastAPI:
    """What uvicorn serves. Bad settings stop it with one line, not a traceback."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(f"error: {settings_error_line(exc)}") from None
    if problem := settings.startup_problem():
        raise SystemExit(f"error: {problem}")
    return create_app(settings)


app = app_from_environment()

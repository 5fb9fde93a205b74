"""The FastAPI application: `uvicorn src.main:app`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from src import errors
from src.config import Settings, get_settings
from src.db import create_engine, create_sessionmaker
from src.migrate import alembic_config, head_revisions
from src.routes import country, health


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings or get_settings())
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.code_heads = head_revisions(alembic_config())
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Country API", version="1.0.0", lifespan=lifespan)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(country.router)
    return app


app = create_app()

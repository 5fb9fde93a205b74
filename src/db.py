"""The app's one async engine and session factory, owned by the FastAPI lifespan."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from src.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.async_url,
        # After a database restart, stale pooled connections are replaced
        # transparently instead of failing the next request.
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=10,
        # Fail fast (then 503) rather than hang when the database is unreachable.
        connect_args={"timeout": 5, "command_timeout": 30},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for Core reads: no ORM identity map or unit of work to pay for."""
    async with request.app.state.engine.connect() as conn:
        yield conn


SessionDep = Annotated[AsyncSession, Depends(get_session)]
ConnectionDep = Annotated[AsyncConnection, Depends(get_connection)]

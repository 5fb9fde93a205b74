"""The floor: the real FastAPI app with its two benchmarked reads on raw asyncpg.

Same application object as `src.main:app` (FastAPIOffline, BodyGuard, the error
handlers, the health routes, the route class, the same path and query parameters validated,
the same ETag'd orjson bodies), but `GET /country/{code}` and `GET /country` run the
ceiling's SQL on an asyncpg pool of their own instead of the app's `Database`. So:

- ceiling → floor is what FastAPI and the app's own layers cost;
- floor → app is what the app's data path (SQLAlchemy's pool checkout, src/reads.py's
  compiled statements and row conversion, the connection gate, the kit) costs.

If the floor itself stays under a ratio goal, no data-path tuning can reach it. It
serves only the two GETs (nothing else of /country). Configured like the ceiling:

    DATABASE_URL=postgresql://... uvicorn bench.floor_app:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response

from bench.ceiling_app import BY_ALPHA2, BY_ALPHA3, dsn, fetch_page
from bench.with_router import app_with_country_router
from src.config import Settings
from src.country import routes as country
from src.kit import pagination
from src.kit.responses import json_with_etag
from src.kit.route import ResourceRoute
from src.kit.text import SearchText


@asynccontextmanager
async def pool_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    url = settings.async_url.render_as_string(hide_password=False)
    size = settings.db_pool_size + settings.db_max_overflow
    async with asyncpg.create_pool(dsn(url), min_size=1, max_size=size) as pool:
        app.state.floor_pool = pool
        yield


# The app's route class, as every resource's router has it (src/kit/resource.py).
router = APIRouter(
    prefix="/country", tags=["country"], route_class=ResourceRoute, lifespan=pool_lifespan
)


@router.get("", response_model=None)
async def list_countries(
    request: Request,
    limit: pagination.Limit = 50,
    offset: pagination.Offset = 0,
    q: Annotated[SearchText | None, Query()] = None,
) -> Response:
    if q:
        raise HTTPException(501, "the floor app does not search")
    page = await fetch_page(request.app.state.floor_pool, limit, offset, request)
    return json_with_etag(request, page)


@router.get("/{code}", response_model=None)
async def get_country(request: Request, code: country.Code) -> Response:
    code = code.upper()
    query = BY_ALPHA2 if len(code) == 2 else BY_ALPHA3
    row = await request.app.state.floor_pool.fetchrow(query, code)
    if row is None:
        raise country.resource.not_found(code.upper())
    return json_with_etag(request, dict(row))


def create_floor_app(settings: Settings | None = None) -> FastAPI:
    """The real app with this router for /country (bench/with_router.py)."""
    return app_with_country_router(router, settings)


def __getattr__(name: str) -> FastAPI:
    if name != "app":
        raise AttributeError(name)
    return create_floor_app()

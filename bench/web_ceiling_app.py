"""The web ceiling: the real FastAPI app answering its two benchmarked reads from memory.

Same application as `src.main:app` (create_app: middleware, error handlers, the same
path and query validation, the same ETag'd bodies and 304s), but `GET /country/{code}`
and `GET /country` look their serialized bodies up in a dict: the countries are read
once at startup, a page's body is built on its first request and kept forever. No
database per request and no invalidation: what no cache behind FastAPI's routing could
beat. src/kit/cache.py answers its hits before that routing (CacheHits), so cached app / web
ceiling above 1 is what skipping routing and validation gains. Configured like the floor:

    DATABASE_URL=postgresql://... uvicorn bench.web_ceiling_app:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response

from bench.ceiling_app import COLUMNS, dsn
from bench.with_router import app_with_country_router
from src.config import Settings
from src.country import routes as country
from src.kit import pagination
from src.kit.pagination import TOTAL_CAP, page_body
from src.kit.responses import respond, serialize
from src.kit.route import ResourceRoute


@asynccontextmanager
async def constant_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    conn = await asyncpg.connect(dsn(settings.async_url.render_as_string(hide_password=False)))
    try:
        rows = [dict(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM country ORDER BY alpha2")]
    finally:
        await conn.close()
    app.state.web_rows = rows
    app.state.web_bodies = {
        code: serialize(row) for row in rows for code in (row["alpha2"], row["alpha3"])
    }
    app.state.web_pages = {}
    yield


# The app's route class, as every resource's router has it (src/kit/resource.py).
router = APIRouter(
    prefix="/country", tags=["country"], route_class=ResourceRoute, lifespan=constant_lifespan
)


def page_of(rows: list[dict[str, Any]], limit: int, offset: int, after: str | None) -> dict:
    """What src.kit.pagination.page_of returns, from the rows in memory."""
    total = min(len(rows), TOTAL_CAP + 1)  # of every row: the cursor only says where to start
    if after is not None:
        rows = [row for row in rows if row["alpha2"] > after]
    fetched = rows[offset : offset + limit + 1]
    items = fetched[:limit]
    next_after = items[-1]["alpha2"] if len(fetched) > limit else None
    return page_body(items, total, limit, offset, next_after)


@router.get("", response_model=None)
async def list_countries(
    request: Request,
    limit: pagination.Limit = 50,
    offset: pagination.Offset = 0,
    after: pagination.After = None,
    q: pagination.Search = None,
) -> Response:
    if q:
        raise HTTPException(501, "the web ceiling does not search")
    pages = request.app.state.web_pages
    key = (request.scope["path"], request.scope["query_string"])
    if (entry := pages.get(key)) is None:
        page = page_of(request.app.state.web_rows, limit, offset, after)
        entry = pages[key] = serialize(pagination.with_next_link(request, page))
    return respond(request, *entry)


@router.get("/{code}", response_model=None)
async def get_country(request: Request, code: country.Code) -> Response:
    entry = request.app.state.web_bodies.get(code.upper())
    if entry is None:
        raise country.resource.not_found(code.upper())
    return respond(request, *entry)


def create_web_ceiling_app(settings: Settings | None = None) -> FastAPI:
    """The real app with this router for /country (bench/with_router.py)."""
    return app_with_country_router(router, settings)


def __getattr__(name: str) -> FastAPI:
    if name != "app":
        raise AttributeError(name)
    return create_web_ceiling_app()

"""The ceiling: the same two reads with nothing between Starlette and asyncpg.

No SQLAlchemy, no FastAPI, no validation layer, no ETag: one asyncpg pool, one
prepared SELECT per endpoint (asyncpg prepares and caches it per connection), rows
straight to orjson. It answers `GET /country/{code}` and `GET /country?limit=&offset=`
with the same bodies as the real app (bench/run.py checks that before loading it),
so the ratio app/ceiling is the cost of the app's layers.

Configured by the environment that bench/run.py passes to both servers: DATABASE_URL,
and DB_POOL_SIZE + DB_MAX_OVERFLOW (the app's pool can grow to their sum, so can
this one). CEILING_POOL_RESET=none skips asyncpg's reset query on release (a
stricter ceiling: one round trip per request; safe here because these reads leave
no session state behind).

    DATABASE_URL=postgresql://... uvicorn bench.ceiling_app:app
"""

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

COLUMNS = "alpha2, alpha3, numeric, name, official_name, created_at, source"
BY_ALPHA2 = f"SELECT {COLUMNS} FROM country WHERE alpha2 = $1"
BY_ALPHA3 = f"SELECT {COLUMNS} FROM country WHERE alpha3 = $1"
# As src/kit/pagination.py: one row more than the page (is there a next one?), the total
# counted up to 1,000 in the same round trip.
COUNT = "SELECT count(*) FROM (SELECT 1 FROM country LIMIT 1001) AS capped"
PAGE = (
    f"SELECT {COLUMNS}, ({COUNT}) AS total FROM country ORDER BY alpha2 LIMIT $1::int + 1 OFFSET $2"
)
JSON = "application/json"


def dsn(url: str) -> str:
    """asyncpg's form of any postgresql[+driver]:// URL."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool release without a reset query (asyncpg still rolls back open transactions)."""


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)


async def get_country(request: Request) -> Response:
    code = request.path_params["code"].upper()
    if len(code) not in (2, 3) or not code.isascii() or not code.isalpha():
        return _json({"detail": "invalid code", "code": "validation_error"}, 422)
    query = BY_ALPHA2 if len(code) == 2 else BY_ALPHA3
    row = await request.app.state.pool.fetchrow(query, code)
    if row is None:
        return _json({"detail": f"country {code!r} not found", "code": "not_found"}, 404)
    return _json(dict(row))


async def list_countries(request: Request) -> Response:
    try:
        limit = int(request.query_params.get("limit", "50"))
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        limit = offset = -1
    if not (1 <= limit <= 250 and 0 <= offset < 2**31):
        return _json({"detail": "bad limit or offset", "code": "validation_error"}, 422)
    return _json(await fetch_page(request.app.state.pool, limit, offset, request))


async def fetch_page(pool: asyncpg.Pool, limit: int, offset: int, request: Request) -> dict:
    """A page of countries, the total and the next link, as the app's list returns them."""
    rows = await pool.fetch(PAGE, limit, offset)
    total = rows[0]["total"] if rows else await pool.fetchval(COUNT)
    items = [dict(row) for row in rows[:limit]]
    for item in items:
        del item["total"]
    next_link = None
    if len(rows) > limit:
        cursor = base64.urlsafe_b64encode(items[-1]["alpha2"].encode()).decode().rstrip("=")
        params = [(k, v) for k, v in request.query_params.items() if k not in ("offset", "cursor")]
        next_link = f"{request.url.path}?{urlencode([*params, ('cursor', cursor)])}"
    return {
        "items": items,
        "total": min(total, 1000),
        "total_exact": total <= 1000,
        "limit": limit,
        "offset": offset,
        "next": next_link,
    }


def create_ceiling_app(database_url: str, max_size: int, reset: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with asyncpg.create_pool(
            dsn(database_url), min_size=1, max_size=max_size, reset=None if reset else _no_reset
        ) as pool:
            app.state.pool = pool
            yield

    return Starlette(
        routes=[
            Route("/country", list_countries),
            Route("/country/{code}", get_country),
        ],
        lifespan=lifespan,
    )


def __getattr__(name: str) -> Starlette:
    """`uvicorn bench.ceiling_app:app`: configured by the environment bench/run.py passes."""
    if name != "app":
        raise AttributeError(name)
    env = os.environ
    return create_ceiling_app(
        env["DATABASE_URL"],
        int(env.get("DB_POOL_SIZE", "20")) + int(env.get("DB_MAX_OVERFLOW", "0")),
        reset=env.get("CEILING_POOL_RESET") != "none",
    )

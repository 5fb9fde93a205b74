"""The ceiling: the same reads and writes with nothing between Starlette and asyncpg.

No SQLAlchemy, no FastAPI, no validation layer: one asyncpg pool, the app's statements
(asyncpg prepares and caches them per connection), rows straight to orjson. It answers
`GET /country/{code}` and `GET /country?limit=&offset=&cursor=&q=` with the same bodies as
the real app (bench/run.py checks that before loading it), so the ratio app/ceiling is the
cost of the app's layers; reads carry no ETag. `POST /country`, `PATCH` and `DELETE
/country/{code}` are the write ceiling (bench/write_ceiling.py).

Configured by the environment that bench/run.py passes to both servers: DATABASE_URL,
API_KEY (for the writes), and DB_POOL_SIZE + DB_MAX_OVERFLOW (the app's pool can grow to
their sum, so can this one). CEILING_POOL_RESET=none skips asyncpg's reset query on
release (a stricter ceiling: one round trip less per request; safe here because these
requests leave no session state behind).

    DATABASE_URL=postgresql://... uvicorn bench.ceiling_app:app
"""

import base64
import binascii
import hashlib
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
TOTAL_CAP = 1000
JSON = "application/json"


def page_statements(match: str | None = None) -> tuple[str, str]:
    """As src/kit/pagination.py's paged(): one row more than the page (is there a next
    one?) after the key $3, and the total counted up to 1,000 in the same round trip; and
    that count alone (for an empty page). `match`: a WHERE condition on both."""
    where = f"WHERE {match} " if match else ""
    count = f"SELECT count(*) FROM (SELECT 1 FROM country {where}LIMIT {TOTAL_CAP + 1}) AS capped"
    also = f"{match} AND " if match else ""
    page = (
        f"SELECT {COLUMNS}, ({count}) AS total FROM country WHERE {also}alpha2 > $3 "
        "ORDER BY alpha2 LIMIT $1::int + 1 OFFSET $2"
    )
    return page, count


PAGE, COUNT = page_statements()


def name_match(q: str) -> str:
    """src/kit/pagination.py's name_match as src/reads.py renders it: the pattern quoted
    into the statement, not bound, so the planner asks the trigram index."""
    escaped = q.replace("/", "//").replace("%", "/%").replace("_", "/_")
    quoted = "'" + f"%{escaped}%".replace("'", "''") + "'"
    return f"lower(name) LIKE lower({quoted}) ESCAPE '/'"


def dsn(url: str) -> str:
    """asyncpg's form of any postgresql[+driver]:// URL."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def etag_for(body: bytes) -> str:
    """src/kit/responses.py's strong ETag of the exact bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool release without a reset query (asyncpg still rolls back open transactions)."""


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)


def _invalid(what: str) -> Response:
    return _json({"detail": f"invalid {what}", "code": "validation_error"}, 422)


async def get_country(request: Request) -> Response:
    code = request.path_params["code"].upper()
    if len(code) not in (2, 3) or not code.isascii() or not code.isalpha():
        return _invalid("code")
    query = BY_ALPHA2 if len(code) == 2 else BY_ALPHA3
    row = await request.app.state.pool.fetchrow(query, code)
    if row is None:
        return _json({"detail": f"country {code!r} not found", "code": "not_found"}, 404)
    return _json(dict(row))


def _cursor(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


async def list_countries(request: Request) -> Response:
    params = request.query_params
    try:
        limit, offset = int(params.get("limit", "50")), int(params.get("offset", "0"))
    except ValueError:
        limit = offset = -1
    if not (1 <= limit <= 250 and 0 <= offset < 2**31):
        return _invalid("limit or offset")
    after = _cursor(params["cursor"]) if "cursor" in params else ""
    if after is None or (offset and after):
        return _invalid("cursor")
    q = params.get("q")
    if q is not None:
        q = q.strip()
        if not (1 <= len(params["q"]) <= 100 and q and q.isprintable()):
            return _invalid("q")
    pool = request.app.state.pool
    return _json(await fetch_page(pool, limit, offset, request, q=q, after=after))


async def fetch_page(
    pool: asyncpg.Pool,
    limit: int,
    offset: int,
    request: Request,
    *,
    q: str | None = None,
    after: str = "",
) -> dict:
    """A page of countries (`q`: whose name contains it), the total and the next link, as
    the app's list returns them."""
    page, count = page_statements(name_match(q)) if q else (PAGE, COUNT)
    rows = await pool.fetch(page, limit, offset, after)
    total = rows[0]["total"] if rows else await pool.fetchval(count)
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
        "total": min(total, TOTAL_CAP),
        "total_exact": total <= TOTAL_CAP,
        "limit": limit,
        "offset": offset,
        "next": next_link,
    }


def create_ceiling_app(
    database_url: str, max_size: int, reset: bool = True, api_key: str | None = None
) -> Starlette:
    """The ceiling on this database; without `api_key` its writes answer 401."""
    from bench import write_ceiling  # it imports this module

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with asyncpg.create_pool(
            dsn(database_url), min_size=1, max_size=max_size, reset=None if reset else _no_reset
        ) as pool:
            app.state.pool = pool
            app.state.api_key = api_key
            yield

    return Starlette(
        routes=[
            Route("/country", list_countries, methods=["GET"]),
            Route("/country/{code}", get_country, methods=["GET"]),
            *write_ceiling.routes(),
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
        api_key=env.get("API_KEY") or None,
    )

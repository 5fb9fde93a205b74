"""The /country resource: ISO 3166-1 countries and their ISO 3166-2 subdivisions.

Handlers validate, hand the SQL in src.queries to the Database (reads on autocommit
connections, writes in a transaction) and serialise the result once (src.responses).
Reads go through the process's response cache (src.cache); writes flush it.
"""

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status

from src import cache, queries
from src.db import T, Work
from src.responses import json_with_etag
from src.routes.deps import database
from src.routes.openapi import cached_read, errors
from src.schemas import (
    TEXT_RULES,
    CountryCreate,
    CountryRead,
    CountryUpdate,
    Cursor,
    Page,
    SearchText,
    SubdivisionRead,
    encode_cursor,
)
from src.security import WriteAccess

router = APIRouter(prefix="/country", tags=["country"])

Code = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z]{2,3}$",
        description="ISO 3166-1 alpha-2 or alpha-3 code, any case",
        examples=["GB"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=250, description="page size")]
Offset = Annotated[
    int,
    Query(
        ge=0,
        le=2**31 - 1,
        description="items to skip (prefer `cursor`: a deep offset "
        "costs a scan of every skipped row). A non-zero offset with `cursor` is refused (422).",
    ),
]
After = Annotated[
    Cursor | None,
    Query(
        alias="cursor",
        description="where the page starts: copied from the previous page's `next`. Opaque: "
        "a value the API did not issue may be refused (422). Not with a non-zero `offset`.",
    ),
]
Search = Annotated[
    SearchText | None,
    Query(description=f"case-insensitive substring of the name. {TEXT_RULES}"),
]


def with_next_link(request: Request, page: dict[str, Any]) -> dict[str, Any]:
    """The page, its `next_after` key turned into a `next` link to the next page."""
    after = page.pop("next_after")
    page["next"] = None
    if after is not None:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "cursor")}
        page["next"] = f"{request.url.path}?{urlencode({**params, 'cursor': encode_cursor(after)})}"
    return page


async def write(request: Request, work: Work[T]) -> T:
    """A write, then this process's cache flushed before the response is sent (also when
    it failed: it may have committed). Other processes hear the database's NOTIFY."""
    try:
        return await database(request).write(work)
    finally:
        cache.of(request).invalidate()


def one_way_to_page(offset: int, after: str | None) -> None:
    if offset and after is not None:
        raise HTTPException(422, "send either cursor or offset, not both")


def not_found(code: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"country {code.upper()!r} not found")


def conflict(exc: queries.DuplicateCountry, values: dict) -> HTTPException:
    detail = (
        f"a country with {exc.field} {values[exc.field]!r} already exists"
        if exc.field
        else "a country with this alpha2 or alpha3 already exists"
    )
    return HTTPException(status.HTTP_409_CONFLICT, detail)


@router.get(
    "",
    response_model=None,
    responses=cached_read(Page[CountryRead], 422),
)
async def list_countries(
    request: Request, limit: Limit = 50, offset: Offset = 0, after: After = None, q: Search = None
) -> Response:
    """Countries ordered by alpha-2 code, a page at a time: follow `next`."""
    one_way_to_page(offset, after)

    async def load() -> dict[str, Any]:
        page = await database(request).read(
            lambda conn: queries.country_page(conn, q, limit, offset, after)
        )
        return with_next_link(request, page)

    return await cache.cached_json(request, load)


@router.get(
    "/{code}",
    response_model=None,
    responses=cached_read(CountryRead, 404, 422),
)
async def get_country(request: Request, code: Code) -> Response:
    """One country by alpha-2 or alpha-3 code."""

    async def load() -> dict[str, Any]:
        found = await database(request).read(lambda conn: queries.country(conn, code))
        if found is None:
            raise not_found(code)
        return found

    return await cache.cached_json(request, load)


@router.get(
    "/{code}/subdivisions",
    response_model=None,
    responses=cached_read(Page[SubdivisionRead], 404, 422),
)
async def list_subdivisions(
    request: Request,
    code: Code,
    limit: Limit = 50,
    offset: Offset = 0,
    after: After = None,
    q: Search = None,
) -> Response:
    """A country's ISO 3166-2 subdivisions ordered by code, with their parent's code."""
    one_way_to_page(offset, after)

    async def load() -> dict[str, Any]:
        page = await database(request).read(
            lambda conn: queries.subdivision_page(conn, code, q, limit, offset, after)
        )
        if page is None:
            raise not_found(code)
        return with_next_link(request, page)

    return await cache.cached_json(request, load)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    dependencies=[WriteAccess],
    responses={
        201: {"model": CountryRead, "headers": {"Location": {"description": "the new country"}}},
        **errors(400, 401, 409, 413, 415, 422),
    },
)
async def create_country(request: Request, body: CountryCreate) -> Response:
    """Create a country. Requires X-API-Key."""
    values = body.model_dump()
    try:
        row = await write(request, lambda conn: queries.insert_country(conn, values))
    except queries.DuplicateCountry as exc:
        raise conflict(exc, values) from None
    response = json_with_etag(request, row, {"Location": f"/country/{row['alpha2']}"})
    response.status_code = status.HTTP_201_CREATED
    return response


@router.patch(
    "/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[WriteAccess],
    responses={
        204: {
            "description": "Changed",
            "headers": {"Location": {"description": "the country (new if alpha2 changed)"}},
        },
        **errors(400, 401, 404, 409, 413, 415, 422),
    },
)
async def update_country(request: Request, code: Code, body: CountryUpdate) -> Response:
    """Change the fields sent (JSON merge-patch style). Requires X-API-Key."""
    values = body.model_dump(exclude_unset=True)
    try:
        alpha2 = await write(request, lambda conn: queries.update_country(conn, code, values))
    except queries.DuplicateCountry as exc:
        raise conflict(exc, values) from None
    if alpha2 is None:
        raise not_found(code)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT, headers={"Location": f"/country/{alpha2}"}
    )


@router.delete(
    "/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[WriteAccess],
    responses=errors(401, 404, 422),
)
async def delete_country(request: Request, code: Code) -> Response:
    """Delete a country and its subdivisions. Requires X-API-Key."""
    if not await write(request, lambda conn: queries.delete_country(conn, code)):
        raise not_found(code)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""The /country resource: ISO 3166-1 countries.

Handlers validate, hand the SQL in queries.py to the Database (reads on a pooled
connection, writes in one transaction) and serialise the result once. The Resource (the
kit) keeps reads in the response cache and flushes it on writes.
"""

from typing import Annotated, Any

from fastapi import Path, Request, Response, status

from src.country import queries
from src.country.schemas import CountryCreate, CountryRead, CountryUpdate
from src.kit.deps import database
from src.kit.pagination import After, Limit, Offset, Page, Search, one_way_to_page, with_next_link
from src.kit.preconditions import Preconditions
from src.kit.resource import Resource
from src.kit.responses import created
from src.reads import Writes
from src.security import WriteAccess

resource = Resource(
    "country", "/country", tables=("country",), key="alpha-2 or alpha-3 code",
    unique="alpha2 or alpha3",
)  # fmt: skip
router = resource.router

Code = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z]{2,3}$",
        description="ISO 3166-1 alpha-2 or alpha-3 code, any case",
        examples=["GB"],
    ),
]


@router.get("", response_model=None, responses=resource.read_responses(Page[CountryRead], 422))
async def list_countries(
    request: Request, limit: Limit = 50, offset: Offset = 0, after: After = None, q: Search = None
) -> Response:
    """Countries ordered by alpha-2 code, a page at a time: follow `next`."""
    one_way_to_page(offset, after)

    async def load() -> dict[str, Any]:
        page = await database(request).read(
            lambda reads: queries.country_page(reads, q, limit, offset, after)
        )
        return with_next_link(request, page)

    return await resource.read(request, load)


@router.get(
    "/{code}", response_model=None, responses=resource.read_responses(CountryRead, 404, 422)
)
async def get_country(request: Request, code: Code) -> Response:
    """One country by alpha-2 or alpha-3 code."""

    async def load() -> dict[str, Any]:
        found = await database(request).read(lambda reads: queries.country(reads, code))
        if found is None:
            raise resource.not_found(code.upper())
        return found

    return await resource.read(request, load)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    dependencies=[WriteAccess],
    responses={
        201: {"model": CountryRead, "headers": {"Location": {"description": "the new country"}}},
        **resource.errors(400, 401, 409, 412, 413, 415, 422),
    },
)
async def create_country(request: Request, body: CountryCreate) -> Response:
    """Create a country. Requires X-API-Key."""
    if conditions := Preconditions.of(request):
        conditions.check_collection()
    values = body.model_dump()
    try:
        row = await resource.write(request, lambda db: queries.insert_country(db, values))
    except queries.DuplicateCountry as exc:
        raise resource.conflict(exc.field, values) from None
    return created(row, f"/country/{row['alpha2']}")


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
        **resource.errors(400, 401, 404, 409, 412, 413, 415, 422),
    },
)
async def update_country(request: Request, code: Code, body: CountryUpdate) -> Response:
    """Change the fields sent (JSON merge-patch style). Requires X-API-Key; If-Match with
    the ETag of a GET makes it conditional (412 when the country changed since)."""
    values, conditions = body.model_dump(exclude_unset=True), Preconditions.of(request)

    async def change(db: Writes) -> str | None:
        if conditions:
            conditions.check(await queries.locked_country(db, code))
        return await queries.update_country(db, code, values)

    try:
        alpha2 = await resource.write(request, change)
    except queries.DuplicateCountry as exc:
        raise resource.conflict(exc.field, values) from None
    if alpha2 is None:
        raise resource.not_found(code.upper())
    return Response(
        status_code=status.HTTP_204_NO_CONTENT, headers={"Location": f"/country/{alpha2}"}
    )


@router.delete(
    "/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[WriteAccess],
    responses=resource.errors(401, 404, 412, 422),
)
async def delete_country(request: Request, code: Code) -> Response:
    """Delete a country and its subdivisions. Requires X-API-Key; If-Match as for PATCH."""
    conditions = Preconditions.of(request)

    async def remove(db: Writes) -> bool:
        if conditions:
            conditions.check(await queries.locked_country(db, code))
        return await queries.delete_country(db, code)

    if not await resource.write(request, remove):
        raise resource.not_found(code.upper())
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""The /country resource: ISO 3166-1 countries and their ISO 3166-2 subdivisions.

Reads select columns with SQLAlchemy Core on autocommit connections (src.db) and
serialise rows once (src.responses). Their statements are built once, at import, with
bound parameters: per request SQLAlchemy only looks their compiled form up in its cache
and asyncpg reuses the statement it prepared on that connection. Writes run in a
transaction and let the database's unique constraints decide conflicts, so concurrent
requests cannot both win.
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from src.db import read, write
from src.errors import ErrorBody
from src.models import Country, Subdivision
from src.responses import json_with_etag
from src.schemas import (
    CountryCreate,
    CountryRead,
    CountryUpdate,
    Page,
    SearchText,
    SubdivisionRead,
)
from src.security import WriteAccess

router = APIRouter(prefix="/country", tags=["country"])

UNIQUE_VIOLATION = "23505"
COUNTRY_COLUMNS = (
    Country.alpha2,
    Country.alpha3,
    Country.numeric,
    Country.name,
    Country.official_name,
    Country.created_at,
)


def paged(stmt: Select) -> Select:
    """`stmt` a page at a time (bound :limit and :offset), plus count(*) OVER () for the total."""
    return (
        stmt.add_columns(func.count().over()).limit(bindparam("limit")).offset(bindparam("offset"))
    )


# The read statements, by code length (alpha-2 or alpha-3); values are bound per request.
_CODE_MATCH = {2: Country.alpha2 == bindparam("code"), 3: Country.alpha3 == bindparam("code")}
COUNTRY_BY_CODE = {n: select(*COUNTRY_COLUMNS).where(m) for n, m in _CODE_MATCH.items()}
COUNTRY_ID_BY_CODE = {n: select(Country.id).where(m) for n, m in _CODE_MATCH.items()}
COUNTRY_PAGE = paged(select(*COUNTRY_COLUMNS).order_by(Country.alpha2))
COUNTRY_COUNT = select(func.count()).select_from(Country)
_parent = aliased(Subdivision)
SUBDIVISION_PAGE = paged(
    select(Subdivision.code, Subdivision.name, Subdivision.type, _parent.code.label("parent_code"))
    .outerjoin(_parent, Subdivision.parent_id == _parent.id)
    .where(Subdivision.country_id == bindparam("country_id"))
    .order_by(Subdivision.code)
)
SUBDIVISION_COUNT = (
    select(func.count())
    .select_from(Subdivision)
    .where(Subdivision.country_id == bindparam("country_id"))
)

ETAG_HEADER = {"ETag": {"description": "Strong validator; send it back in If-None-Match"}}
NOT_MODIFIED = {304: {"description": "Not modified: the If-None-Match ETag still matches"}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in (*codes, 503)}


Code = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z]{2,3}$",
        description="ISO 3166-1 alpha-2 or alpha-3 code, any case",
        examples=["GB"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=250, description="page size")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]


def by_code(code: str) -> ColumnElement[bool]:
    code = code.upper()
    return Country.alpha2 == code if len(code) == 2 else Country.alpha3 == code


def not_found(code: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"country {code.upper()!r} not found")


def conflict(exc: IntegrityError, values: dict[str, Any]) -> HTTPException:
    """409 for a unique violation, naming the clashing field; anything else is re-raised."""
    if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
        raise exc
    constraint = getattr(exc.orig.__cause__, "constraint_name", "") or ""
    field = next((f for f in ("alpha2", "alpha3") if constraint == f"country_{f}_key"), None)
    detail = (
        f"a country with {field} {values[field]!r} already exists"
        if field
        else "a country with this alpha2 or alpha3 already exists"
    )
    return HTTPException(status.HTTP_409_CONFLICT, detail)


def page_of(
    conn: Connection, stmt: Select, count_stmt: Select, params: dict, limit: int, offset: int
) -> dict:
    """One round trip for a `paged()` statement: the rows and the total (a second query
    only when the page is empty)."""
    result = conn.execute(stmt, {**params, "limit": limit, "offset": offset})
    fields = tuple(result.keys())[:-1]  # zip() below stops there: the total is left out
    rows = result.all()
    total = rows[0][-1] if rows else conn.scalar(count_stmt, params)
    return {
        "items": [dict(zip(fields, row)) for row in rows],  # noqa: B905
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "",
    response_model=None,
    responses={
        200: {"model": Page[CountryRead], "headers": ETAG_HEADER},
        **NOT_MODIFIED,
        **errors(422),
    },
)
async def list_countries(
    request: Request,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[SearchText | None, Query(description="case-insensitive name filter")] = None,
) -> Response:
    """Countries ordered by alpha-2 code, a page at a time."""
    stmt, count = COUNTRY_PAGE, COUNTRY_COUNT
    if q:  # autoescape needs the text itself, so this filter is built per request
        match = Country.name.icontains(q, autoescape=True)
        stmt, count = stmt.where(match), count.where(match)
    page = await read(request, lambda conn: page_of(conn, stmt, count, {}, limit, offset))
    return json_with_etag(request, page)


@router.get(
    "/{code}",
    response_model=None,
    responses={
        200: {"model": CountryRead, "headers": ETAG_HEADER},
        **NOT_MODIFIED,
        **errors(404, 422),
    },
)
async def get_country(request: Request, code: Code) -> Response:
    """One country by alpha-2 or alpha-3 code."""
    code = code.upper()
    stmt = COUNTRY_BY_CODE[len(code)]
    row = await read(request, lambda conn: conn.execute(stmt, {"code": code}).first())
    if row is None:
        raise not_found(code)
    return json_with_etag(request, row._asdict())


@router.get(
    "/{code}/subdivisions",
    response_model=None,
    responses={
        200: {"model": Page[SubdivisionRead], "headers": ETAG_HEADER},
        **NOT_MODIFIED,
        **errors(404, 422),
    },
)
async def list_subdivisions(
    request: Request, code: Code, limit: Limit = 50, offset: Offset = 0
) -> Response:
    """A country's ISO 3166-2 subdivisions ordered by code, with their parent's code."""
    code = code.upper()

    def subdivisions_page(conn: Connection) -> dict | None:
        country_id = conn.scalar(COUNTRY_ID_BY_CODE[len(code)], {"code": code})
        if country_id is None:
            return None
        params = {"country_id": country_id}
        return page_of(conn, SUBDIVISION_PAGE, SUBDIVISION_COUNT, params, limit, offset)

    page = await read(request, subdivisions_page)
    if page is None:
        raise not_found(code)
    return json_with_etag(request, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    dependencies=[WriteAccess],
    responses={
        201: {"model": CountryRead, "headers": {"Location": {"description": "the new country"}}},
        **errors(401, 409, 413, 415, 422),
    },
)
async def create_country(request: Request, body: CountryCreate) -> Response:
    """Create a country. Requires X-API-Key."""
    values = body.model_dump()
    stmt = insert(Country).values(values).returning(*COUNTRY_COLUMNS)
    try:
        row = await write(request, lambda conn: conn.execute(stmt).one())
    except IntegrityError as exc:
        raise conflict(exc, values) from None
    response = json_with_etag(request, row._asdict(), {"Location": f"/country/{row.alpha2}"})
    response.status_code = status.HTTP_201_CREATED
    return response


@router.patch(
    "/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[WriteAccess],
    responses=errors(401, 404, 409, 413, 415, 422),
)
async def update_country(request: Request, code: Code, body: CountryUpdate) -> Response:
    """Change the fields sent (JSON merge-patch style). Requires X-API-Key."""
    values = body.model_dump(exclude_unset=True)
    if not values:
        raise HTTPException(422, "send at least one field to change")
    required_nulls = sorted(
        f for f in ("alpha2", "alpha3", "name") if f in values and values[f] is None
    )
    if required_nulls:
        raise HTTPException(422, f"{', '.join(required_nulls)} cannot be null")
    stmt = update(Country).where(by_code(code)).values(values).returning(Country.alpha2)
    try:
        row = await write(request, lambda conn: conn.execute(stmt).first())
    except IntegrityError as exc:
        raise conflict(exc, values) from None
    if row is None:
        raise not_found(code)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT, headers={"Location": f"/country/{row.alpha2}"}
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
    stmt = delete(Country).where(by_code(code)).returning(Country.id)
    deleted = await write(request, lambda conn: conn.execute(stmt).first())
    if deleted is None:
        raise not_found(code)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""The SQL of the /country resource, as plain functions of a sync Connection.

Statements are built once, at import, with bound parameters: per request SQLAlchemy only
looks their compiled form up in its cache and asyncpg reuses the statement it prepared on
that connection. Writes let the database's unique constraints decide conflicts, so
concurrent requests cannot both win.
"""

from typing import Any

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

from src.models import Country, Subdivision

UNIQUE_VIOLATION = "23505"
COUNTRY_COLUMNS = (
    Country.alpha2,
    Country.alpha3,
    Country.numeric,
    Country.name,
    Country.official_name,
    Country.created_at,
)
# The one way to find a country: alpha-2 or alpha-3 by the code's length, bound as :code.
_BY_CODE: dict[int, ColumnElement[bool]] = {
    2: Country.alpha2 == bindparam("code"),
    3: Country.alpha3 == bindparam("code"),
}


def by_code(code: str) -> tuple[ColumnElement[bool], dict[str, str]]:
    """The WHERE clause and its parameters for an alpha-2 or alpha-3 code, any case."""
    return _BY_CODE[len(code)], {"code": code.upper()}


def paged(stmt: Select) -> Select:
    """`stmt` a page at a time (bound :limit and :offset), plus count(*) OVER () for the total."""
    return (
        stmt.add_columns(func.count().over()).limit(bindparam("limit")).offset(bindparam("offset"))
    )


COUNTRY_BY_CODE = {n: select(*COUNTRY_COLUMNS).where(m) for n, m in _BY_CODE.items()}
COUNTRY_ID_BY_CODE = {n: select(Country.id).where(m) for n, m in _BY_CODE.items()}
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


def page_of(
    conn: Connection, stmt: Select, count_stmt: Select, params: dict, limit: int, offset: int
) -> dict[str, Any]:
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


# --- reads ---------------------------------------------------------------------------


def country(conn: Connection, code: str) -> dict[str, Any] | None:
    _, params = by_code(code)
    row = conn.execute(COUNTRY_BY_CODE[len(code)], params).first()
    return None if row is None else row._asdict()


def country_page(conn: Connection, q: str | None, limit: int, offset: int) -> dict[str, Any]:
    stmt, count = COUNTRY_PAGE, COUNTRY_COUNT
    if q:  # autoescape needs the text itself, so this filter is built per request
        match = Country.name.icontains(q, autoescape=True)
        stmt, count = stmt.where(match), count.where(match)
    return page_of(conn, stmt, count, {}, limit, offset)


def subdivision_page(conn: Connection, code: str, limit: int, offset: int) -> dict[str, Any] | None:
    """A country's subdivisions, or None when there is no such country."""
    _, params = by_code(code)
    country_id = conn.scalar(COUNTRY_ID_BY_CODE[len(code)], params)
    if country_id is None:
        return None
    params = {"country_id": country_id}
    return page_of(conn, SUBDIVISION_PAGE, SUBDIVISION_COUNT, params, limit, offset)


# --- writes --------------------------------------------------------------------------


class DuplicateCountry(Exception):
    """A unique code is taken; `field` names it when the constraint tells which."""

    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field


def _duplicate(exc: IntegrityError) -> DuplicateCountry:
    """DuplicateCountry for a unique violation; any other integrity error is re-raised."""
    if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
        raise exc
    constraint = getattr(exc.orig.__cause__, "constraint_name", "") or ""
    field = next((f for f in ("alpha2", "alpha3") if constraint == f"country_{f}_key"), None)
    return DuplicateCountry(field)


def insert_country(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    try:
        row = conn.execute(insert(Country).values(values).returning(*COUNTRY_COLUMNS)).one()
    except IntegrityError as exc:
        raise _duplicate(exc) from None
    return row._asdict()


def update_country(conn: Connection, code: str, values: dict[str, Any]) -> str | None:
    """The country's alpha-2 after the change, or None when there is no such country."""
    where, params = by_code(code)
    stmt = update(Country).where(where).values(values).returning(Country.alpha2)
    try:
        return conn.execute(stmt, params).scalar()
    except IntegrityError as exc:
        raise _duplicate(exc) from None


def delete_country(conn: Connection, code: str) -> bool:
    """True when the country existed; its subdivisions go with it (ON DELETE CASCADE)."""
    where, params = by_code(code)
    return (
        conn.execute(delete(Country).where(where).returning(Country.id), params).first() is not None
    )

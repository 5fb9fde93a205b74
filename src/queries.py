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
    literal,
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
    Country.source,
)
# The one way to find a country: alpha-2 or alpha-3 by the code's length, bound as :code.
_BY_CODE: dict[int, ColumnElement[bool]] = {
    2: Country.alpha2 == bindparam("code"),
    3: Country.alpha3 == bindparam("code"),
}


def by_code(code: str) -> tuple[ColumnElement[bool], dict[str, str]]:
    """The WHERE clause and its parameters for an alpha-2 or alpha-3 code, any case."""
    return _BY_CODE[len(code)], {"code": code.upper()}


# Totals are counted up to this many rows, so a page costs the same at any table size.
TOTAL_CAP = 1000


def paged(
    stmt: Select, key: ColumnElement, where: ColumnElement[bool] | None = None
) -> tuple[Select, Select]:
    """`stmt` ordered by the unique `key`, a page at a time: :limit + 1 rows (the extra one
    says whether a next page exists) from :offset or after the key :after, plus the total
    counted up to TOTAL_CAP in the same round trip. Also returns that count alone."""
    counted = select(literal(1)).select_from(key.table)
    if where is not None:
        stmt, counted = stmt.where(where), counted.where(where)
    total = select(func.count()).select_from(counted.limit(TOTAL_CAP + 1).subquery())
    return (
        stmt.add_columns(total.scalar_subquery().label("total"))
        .where(key > bindparam("after"))
        .order_by(key)
        .limit(bindparam("limit") + 1)
        .offset(bindparam("offset"))
    ), total


COUNTRY_BY_CODE = {n: select(*COUNTRY_COLUMNS).where(m) for n, m in _BY_CODE.items()}
COUNTRY_ID_BY_CODE = {n: select(Country.id).where(m) for n, m in _BY_CODE.items()}
COUNTRY_PAGE, COUNTRY_COUNT = paged(select(*COUNTRY_COLUMNS), Country.alpha2)
_parent = aliased(Subdivision)
_OF_COUNTRY = Subdivision.country_id == bindparam("country_id")
_SUBDIVISIONS = select(
    Subdivision.code, Subdivision.name, Subdivision.type, _parent.code.label("parent_code")
).outerjoin(_parent, Subdivision.parent_id == _parent.id)
SUBDIVISION_PAGE, SUBDIVISION_COUNT = paged(_SUBDIVISIONS, Subdivision.code, _OF_COUNTRY)


def page_of(
    conn: Connection,
    stmt: Select,
    count_stmt: Select,
    params: dict,
    limit: int,
    offset: int,
    after: str | None,
) -> dict[str, Any]:
    """One round trip for a `paged()` statement: the rows, the capped total (a second
    query only when the page is empty) and the key after which the next page starts."""
    bound = {**params, "limit": limit, "offset": offset, "after": after or ""}
    result = conn.execute(stmt, bound)
    fields = tuple(result.keys())[:-1]  # zip() below stops there: the total is left out
    rows = result.all()
    total = rows[0][-1] if rows else conn.scalar(count_stmt, params)
    more = len(rows) > limit
    items = [dict(zip(fields, row)) for row in rows[:limit]]  # noqa: B905
    return page_body(items, total, limit, offset, items[-1][fields[0]] if more else None)


def page_body(
    items: list[dict[str, Any]], total: int, limit: int, offset: int, next_after: str | None
) -> dict[str, Any]:
    """A page as the API answers it: `total` (counted to TOTAL_CAP + 1) capped, and if exact."""
    return {
        "items": items,
        "total": min(total, TOTAL_CAP),
        "total_exact": total <= TOTAL_CAP,
        "limit": limit,
        "offset": offset,
        "next_after": next_after,
    }


# --- reads ---------------------------------------------------------------------------


def country(conn: Connection, code: str) -> dict[str, Any] | None:
    _, params = by_code(code)
    row = conn.execute(COUNTRY_BY_CODE[len(code)], params).first()
    return None if row is None else row._asdict()


def country_page(
    conn: Connection, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any]:
    stmt, count = COUNTRY_PAGE, COUNTRY_COUNT
    if q:  # autoescape needs the text itself, so this filter is built per request
        stmt, count = paged(select(*COUNTRY_COLUMNS), Country.alpha2, _name_match(Country, q))
    return page_of(conn, stmt, count, {}, limit, offset, after)


def subdivision_page(
    conn: Connection, code: str, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any] | None:
    """A country's subdivisions, or None when there is no such country."""
    _, params = by_code(code)
    country_id = conn.scalar(COUNTRY_ID_BY_CODE[len(code)], params)
    if country_id is None:
        return None
    stmt, count = SUBDIVISION_PAGE, SUBDIVISION_COUNT
    if q:  # the country inline too: the plan must know how many rows it has (_name_match)
        inline = Subdivision.country_id == bindparam("country_id", literal_execute=True)
        stmt, count = paged(_SUBDIVISIONS, Subdivision.code, inline & _name_match(Subdivision, q))
    return page_of(conn, stmt, count, {"country_id": country_id}, limit, offset, after)


def _name_match(model: type[Country] | type[Subdivision], q: str) -> ColumnElement[bool]:
    """lower(name) LIKE lower('%q%'), served by the trigram index on lower(name). The
    pattern is rendered into the SQL (quoted by SQLAlchemy; literal_execute), not bound:
    a prepared statement's generic plan cannot see it, so it would pick the country_id
    index and filter every row of the country instead of asking the trigram index."""
    escaped = q.replace("/", "//").replace("%", "/%").replace("_", "/_")
    pattern = bindparam("pattern", f"%{escaped}%", literal_execute=True)
    return func.lower(model.name).like(func.lower(pattern), escape="/")


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

"""The SQL of /country, built once at import with bound parameters: reads as async
functions of Reads (src/reads.py), writes as functions of a sync Connection in the write's
transaction; the unique constraints decide conflicts, so concurrent writes cannot both win."""

from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from src.kit.pagination import name_match, page_of, paged, search_pattern
from src.models import Country
from src.reads import Reads

UNIQUE_VIOLATION = "23505"
# The unique constraints a client's values can take, by name (src/models.py's convention).
UNIQUE_FIELDS = {"country_alpha2_key": "alpha2", "country_alpha3_key": "alpha3"}
PRIMARY_KEY = "country_pkey"
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


COUNTRY_BY_CODE = {n: select(*COUNTRY_COLUMNS).where(m) for n, m in _BY_CODE.items()}
LOCKED_BY_CODE = {n: stmt.with_for_update() for n, stmt in COUNTRY_BY_CODE.items()}
COUNTRY_ID_BY_CODE = {n: select(Country.id).where(m) for n, m in _BY_CODE.items()}
COUNTRY_PAGE, COUNTRY_COUNT = paged(select(*COUNTRY_COLUMNS), Country.alpha2)
SEARCH_PAGE, SEARCH_COUNT = paged(
    select(*COUNTRY_COLUMNS), Country.alpha2, name_match(Country.name)
)


# --- reads ---------------------------------------------------------------------------


async def country(reads: Reads, code: str) -> dict[str, Any] | None:
    """As GET shows it."""
    _, params = by_code(code)
    return await reads.one(COUNTRY_BY_CODE[len(code)], params)


async def country_id(reads: Reads, code: str) -> int | None:
    _, params = by_code(code)
    return await reads.scalar(COUNTRY_ID_BY_CODE[len(code)], params)


async def country_page(
    reads: Reads, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any]:
    if q:
        pattern = search_pattern(q)
        return await page_of(reads, SEARCH_PAGE, SEARCH_COUNT, pattern, limit, offset, after)
    return await page_of(reads, COUNTRY_PAGE, COUNTRY_COUNT, {}, limit, offset, after)


# --- writes --------------------------------------------------------------------------


def locked_country(conn: Connection, code: str) -> dict[str, Any] | None:
    """As GET shows it, locked until the write's transaction ends (FOR UPDATE)."""
    _, params = by_code(code)
    row = conn.execute(LOCKED_BY_CODE[len(code)], params).first()
    return None if row is None else row._asdict()


class DuplicateCountry(Exception):
    """A unique code is taken; `field` names it when the constraint tells which."""

    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field


class IdSequenceBehind(Exception):
    """A new row's generated id is taken: the server's fault, not the request's (a 500). The
    API's role may not setval() (USAGE only), so an operator resets the sequence."""


def _duplicate(exc: IntegrityError) -> DuplicateCountry:
    """DuplicateCountry for a unique violation; any other integrity error is re-raised."""
    if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
        raise exc
    constraint = getattr(exc.orig.__cause__, "constraint_name", "") or ""
    if constraint == PRIMARY_KEY:
        raise IdSequenceBehind(
            f"{PRIMARY_KEY} violated by a new country: the id sequence is behind ids inserted "
            "explicitly (by hand or a data load, not the API); reset it: SELECT setval("
            "pg_get_serial_sequence('country', 'id'), max(id)) FROM country"
        ) from None
    return DuplicateCountry(UNIQUE_FIELDS.get(constraint))


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

"""The SQL of /country, built once at import with bound parameters, as async functions of
Reads (src/reads.py) or, in a write's transaction, Writes; the unique constraints decide
conflicts, so concurrent writes cannot both win."""

from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Update, bindparam, delete, insert, select, update

from src.kit.pagination import name_match, page_of, paged, search_pattern
from src.models import Country
from src.reads import Reads, Writes

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


def by_code(code: str) -> dict[str, str]:
    """The parameters of _BY_CODE[len(code)] for an alpha-2 or alpha-3 code, any case."""
    return {"code": code.upper()}


COUNTRY_BY_CODE = {n: select(*COUNTRY_COLUMNS).where(m) for n, m in _BY_CODE.items()}
LOCKED_BY_CODE = {n: stmt.with_for_update() for n, stmt in COUNTRY_BY_CODE.items()}
COUNTRY_ID_BY_CODE = {n: select(Country.id).where(m) for n, m in _BY_CODE.items()}
# The columns a client sets (CountryCreate's fields), each bound under its own name.
WRITABLE = ("alpha2", "alpha3", "name", "numeric", "official_name")
INSERT_COUNTRY = (
    insert(Country).values({f: bindparam(f) for f in WRITABLE}).returning(*COUNTRY_COLUMNS)
)
DELETE_BY_CODE = {n: delete(Country).where(m).returning(Country.id) for n, m in _BY_CODE.items()}
COUNTRY_PAGE, COUNTRY_COUNT = paged(select(*COUNTRY_COLUMNS), Country.alpha2)
SEARCH_PAGE, SEARCH_COUNT = paged(
    select(*COUNTRY_COLUMNS), Country.alpha2, name_match(Country.name)
)


# --- reads ---------------------------------------------------------------------------


async def country(reads: Reads, code: str) -> dict[str, Any] | None:
    """As GET shows it."""
    return await reads.one(COUNTRY_BY_CODE[len(code)], by_code(code))


async def country_id(reads: Reads, code: str) -> int | None:
    return await reads.scalar(COUNTRY_ID_BY_CODE[len(code)], by_code(code))


async def country_page(
    reads: Reads, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any]:
    if q:
        pattern = search_pattern(q)
        return await page_of(reads, SEARCH_PAGE, SEARCH_COUNT, pattern, limit, offset, after)
    return await page_of(reads, COUNTRY_PAGE, COUNTRY_COUNT, {}, limit, offset, after)


# --- writes --------------------------------------------------------------------------


async def locked_country(db: Writes, code: str) -> dict[str, Any] | None:
    """As GET shows it, locked until the write's transaction ends (FOR UPDATE)."""
    return await db.one(LOCKED_BY_CODE[len(code)], by_code(code))


class DuplicateCountry(Exception):
    """A unique code is taken; `field` names it when the constraint tells which."""

    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field


class IdSequenceBehind(Exception):
    """A new row's generated id is taken: the server's fault, not the request's (a 500). The
    API's role may not setval() (USAGE only), so an operator resets the sequence."""


def _duplicate(exc: asyncpg.UniqueViolationError) -> DuplicateCountry:
    if exc.constraint_name == PRIMARY_KEY:
        raise IdSequenceBehind(
            f"{PRIMARY_KEY} violated by a new country: the id sequence is behind ids inserted "
            "explicitly (by hand or a data load, not the API); reset it: SELECT setval("
            "pg_get_serial_sequence('country', 'id'), max(id)) FROM country"
        ) from None
    return DuplicateCountry(UNIQUE_FIELDS.get(exc.constraint_name or ""))


async def insert_country(db: Writes, values: dict[str, Any]) -> dict[str, Any]:
    try:
        row = await db.one(INSERT_COUNTRY, values)
    except asyncpg.UniqueViolationError as exc:
        raise _duplicate(exc) from None
    assert row is not None  # INSERT ... RETURNING: one row
    return row


@lru_cache(maxsize=64)
def _update_statement(fields: tuple[str, ...], code_length: int) -> Update:
    """One statement per set of changed fields (a merge-patch sends any of them)."""
    changes = {f: bindparam(f) for f in fields}
    return update(Country).where(_BY_CODE[code_length]).values(changes).returning(Country.alpha2)


async def update_country(db: Writes, code: str, values: dict[str, Any]) -> str | None:
    """The country's alpha-2 after the change, or None when there is no such country."""
    stmt = _update_statement(tuple(sorted(values)), len(code))
    try:
        return await db.scalar(stmt, {**values, **by_code(code)})
    except asyncpg.UniqueViolationError as exc:
        raise _duplicate(exc) from None


async def delete_country(db: Writes, code: str) -> bool:
    """True when the country existed; its subdivisions go with it (ON DELETE CASCADE)."""
    return await db.one(DELETE_BY_CODE[len(code)], by_code(code)) is not None

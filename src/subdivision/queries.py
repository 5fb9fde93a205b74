"""The SQL of a country's subdivisions (/country/{code}/subdivisions)."""

from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import aliased

from src.country.queries import country_id
from src.kit.pagination import name_match, page_of, paged
from src.models import Subdivision

_parent = aliased(Subdivision)
_OF_COUNTRY = Subdivision.country_id == bindparam("country_id")
_SUBDIVISIONS = select(
    Subdivision.code, Subdivision.name, Subdivision.type, _parent.code.label("parent_code")
).outerjoin(_parent, Subdivision.parent_id == _parent.id)
SUBDIVISION_PAGE, SUBDIVISION_COUNT = paged(_SUBDIVISIONS, Subdivision.code, _OF_COUNTRY)


def subdivision_page(
    conn: Connection, code: str, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any] | None:
    """A country's subdivisions, or None when there is no such country."""
    parent = country_id(conn, code)
    if parent is None:
        return None
    stmt, count = SUBDIVISION_PAGE, SUBDIVISION_COUNT
    if q:  # the country inline too: the plan must know how many rows it has (name_match)
        inline = Subdivision.country_id == bindparam("country_id", literal_execute=True)
        stmt, count = paged(
            _SUBDIVISIONS, Subdivision.code, inline & name_match(Subdivision.name, q)
        )
    return page_of(conn, stmt, count, {"country_id": parent}, limit, offset, after)

"""The SQL of a country's subdivisions (/country/{code}/subdivisions)."""

from typing import Any

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.orm import aliased

from src.country.queries import country_id
from src.kit.pagination import name_match, page_of, paged, search_pattern
from src.models import Subdivision
from src.reads import Reads, rendered

_parent = aliased(Subdivision)
_OF_COUNTRY = Subdivision.country_id == bindparam("country_id")
_SUBDIVISIONS = select(
    Subdivision.code, Subdivision.name, Subdivision.type, _parent.code.label("parent_code")
).outerjoin(_parent, Subdivision.parent_id == _parent.id)
SUBDIVISION_PAGE, SUBDIVISION_COUNT = paged(_SUBDIVISIONS, Subdivision.code, _OF_COUNTRY)
# The country rendered too: the plan must know how many rows it has (name_match).
_OF_COUNTRY_RENDERED = Subdivision.country_id == rendered("country_id", Integer)
SEARCH_PAGE, SEARCH_COUNT = paged(
    _SUBDIVISIONS, Subdivision.code, _OF_COUNTRY_RENDERED & name_match(Subdivision.name)
)


async def subdivision_page(
    reads: Reads, code: str, q: str | None, limit: int, offset: int, after: str | None
) -> dict[str, Any] | None:
    """A country's subdivisions, or None when there is no such country."""
    parent = await country_id(reads, code)
    if parent is None:
        return None
    if q:
        params = {"country_id": parent, **search_pattern(q)}
        return await page_of(reads, SEARCH_PAGE, SEARCH_COUNT, params, limit, offset, after)
    params = {"country_id": parent}
    return await page_of(reads, SUBDIVISION_PAGE, SUBDIVISION_COUNT, params, limit, offset, after)

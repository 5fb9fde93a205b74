"""A country's ISO 3166-2 subdivisions: /country/{code}/subdivisions."""

from typing import Any

from fastapi import Request, Response

from src.country.routes import Code
from src.kit.deps import database
from src.kit.pagination import After, Limit, Offset, Page, Search, one_way_to_page, with_next_link
from src.kit.resource import Resource
from src.subdivision import queries
from src.subdivision.schemas import SubdivisionRead

# Its 404 is its country's: the path names a country.
resource = Resource(
    "country", "/country/{code}/subdivisions", tables=("country", "subdivision"),
    key="alpha-2 or alpha-3 code",
)  # fmt: skip
router = resource.router


@router.get(
    "", response_model=None, responses=resource.read_responses(Page[SubdivisionRead], 404, 422)
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
            lambda reads: queries.subdivision_page(reads, code, q, limit, offset, after)
        )
        if page is None:
            raise resource.not_found(code.upper())
        return with_next_link(request, page)

    return await resource.read(request, load)

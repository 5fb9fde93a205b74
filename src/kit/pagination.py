"""Pages of any resource: keyset cursors, a capped total, the `next` link, and the
SQL that fetches a page and its total in one round trip."""

import base64
import binascii
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import HTTPException, Query, Request
from pydantic import AfterValidator, BaseModel, Field, StringConstraints
from sqlalchemy import ColumnElement, Select, bindparam, func, literal, select

from src.kit.text import TEXT_RULES, SearchText, clean_text
from src.reads import Reads, rendered

Item = TypeVar("Item")


def _decode_cursor(value: str) -> str:
    """The sort key after which the page starts (the cursor is its base64url form)."""
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor from a `next` link") from None
    clean_text(key)
    return key


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


# base64url without padding (no length of 4n+1), up to 64 characters.
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4}){0,15}[A-Za-z0-9_-]{2,4}$"
Cursor = Annotated[
    str,
    StringConstraints(pattern=CURSOR_PATTERN),
    AfterValidator(_decode_cursor),
]


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    total: int = Field(
        description="matching items in all pages, counted up to a cap: exact when "
        "`total_exact`, else a lower bound"
    )
    total_exact: bool
    limit: int
    offset: int
    next: str | None = Field(
        description="the next page (keyset: stable under concurrent inserts), or null "
        "on the last one",
        examples=["/item?limit=50&cursor=R0I"],
    )


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


def one_way_to_page(offset: int, after: str | None) -> None:
    if offset and after is not None:
        raise HTTPException(422, "send either cursor or offset, not both")


def with_next_link(request: Request, page: dict[str, Any]) -> dict[str, Any]:
    """The page, its `next_after` key turned into a `next` link to the next page."""
    after = page.pop("next_after")
    page["next"] = None
    if after is not None:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "cursor")}
        page["next"] = f"{request.url.path}?{urlencode({**params, 'cursor': encode_cursor(after)})}"
    return page


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


async def page_of(
    reads: Reads,
    stmt: Select,
    count_stmt: Select,
    params: dict[str, Any],
    limit: int,
    offset: int,
    after: str | None,
) -> dict[str, Any]:
    """One round trip for a `paged()` statement: the rows, the capped total (a second
    query only when the page is empty) and the key after which the next page starts."""
    bound = {**params, "limit": limit, "offset": offset, "after": after or ""}
    rows = await reads.all(stmt, bound)
    total = rows[0]["total"] if rows else await reads.scalar(count_stmt, params)
    items = rows[:limit]
    for item in items:
        del item["total"]
    more = len(rows) > limit
    return page_body(items, total, limit, offset, next(iter(items[-1].values())) if more else None)


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


def name_match(column: ColumnElement[str]) -> ColumnElement[bool]:
    """lower(name) LIKE lower(:pattern), its `search_pattern()` rendered (quoted), not bound,
    so the planner sees it and asks the trigram index rather than filtering every row."""
    return func.lower(column).like(func.lower(rendered("pattern")), escape="/")


def search_pattern(q: str) -> dict[str, str]:
    """The `pattern` parameter of `name_match()`: rows whose name contains `q`, any case."""
    escaped = q.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return {"pattern": f"%{escaped}%"}

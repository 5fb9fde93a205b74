"""A resource of the API: its router, its words (404, 409), how it reads (cached or not)
and writes. Each resource's package makes one; src/resources.py lists them."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import MetaData

from src.db import T, WriteWork
from src.kit import cache, openapi
from src.kit.deps import database
from src.kit.responses import json_with_etag
from src.kit.route import ResourceRoute
from src.kit.triggers import CACHED


@dataclass
class Resource:
    """`name` is what its 404 and 409 say; `tables` are what its reads come from: when
    every one is @cached (src/kit/triggers.py), its reads are kept by the response cache."""

    name: str
    prefix: str
    tables: tuple[str, ...]
    key: str = "code"  # what identifies one (its 404 and OpenAPI name it)
    unique: str = "code"  # what its 409 says is taken
    cached: bool = False  # set by cached_tables() from its tables' @cached
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(
            prefix=self.prefix,
            tags=[self.name],
            route_class=ResourceRoute,  # strict JSON bodies, no unknown query parameters
        )

    @property
    def words(self) -> dict[int, str]:
        """Its meaning of 404 and 409, for OpenAPI."""
        return {
            404: f"No {self.name} with this {self.key}",
            409: f"Another {self.name} already has this {self.unique}",
        }

    def errors(self, *codes: int) -> dict[int | str, dict[str, Any]]:
        return openapi.errors(*codes, words=self.words)

    def read_responses(self, model: Any, *codes: int) -> dict[int | str, dict[str, Any]]:
        return openapi.read_responses(model, *codes, words=self.words)

    def not_found(self, key: str) -> HTTPException:
        return HTTPException(status.HTTP_404_NOT_FOUND, f"{self.name} {key!r} not found")

    def conflict(self, field_name: str | None, values: dict[str, Any]) -> HTTPException:
        taken = f"{field_name} {values[field_name]!r}" if field_name else f"this {self.unique}"
        return HTTPException(status.HTTP_409_CONFLICT, f"a {self.name} with {taken} already exists")

    async def read(self, request: Request, load: Callable[[], Awaitable[Any]]) -> Response:
        """`load()`'s content with its ETag; kept by the response cache when it may be."""
        if self.cached:
            return await cache.cached_json(request, load)
        return json_with_etag(request, await load())

    async def write(self, request: Request, work: WriteWork[T]) -> T:
        """A write, then this process's cache flushed before the response is sent (also when
        it failed: it may have committed). Other processes hear the database's NOTIFY."""
        try:
            return await database(request).write(work)
        finally:
            cache.of(request).invalidate()


def cached_tables(resources: tuple[Resource, ...], metadata: MetaData) -> frozenset[str]:
    """The tables the cache keeps reads of: those of each resource whose tables are all
    @cached, which it marks `cached`."""
    marked = {t.name for t in metadata.tables.values() if t.name in CACHED}
    for resource in resources:
        resource.cached = set(resource.tables) <= marked
    return frozenset(t for r in resources if r.cached for t in r.tables)

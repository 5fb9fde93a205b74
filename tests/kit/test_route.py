"""src/kit/route.py: a resource's route refuses query parameters it does not declare (422,
naming each and the ones it takes), inside its handler; declared ones pass. Duplicate JSON
keys (the strict body the same route class reads) are tests/kit/test_bodies.py's."""

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel

from src import errors
from src.kit.route import ResourceRoute
from tests.helpers import asgi_client


def page_size(size: Annotated[int, Query(alias="page-size")] = 10) -> int:
    return size


def tenant(who: str | None = None, size: int = Depends(page_size)) -> str:
    """A dependency with a query parameter of its own, and one of its sub-dependency's."""
    return f"{who}:{size}"


class Item(BaseModel):
    name: str


def scratch_app() -> FastAPI:
    router = APIRouter(route_class=ResourceRoute)

    @router.get("/items")
    async def items(
        limit: int = 5,
        after: Annotated[str | None, Query(alias="cursor")] = None,
        owner: str = Depends(tenant),
    ) -> dict:
        return {"limit": limit, "after": after, "owner": owner}

    @router.get("/items/{key}")
    async def one_item(key: str) -> dict:
        return {"key": key}

    @router.post("/items", status_code=201)
    async def add(item: Item, dry: bool = False) -> dict:
        return {"name": item.name, "dry": dry}

    app = FastAPI()
    app.include_router(router)
    errors.install(app)
    return app


@pytest.fixture
async def scratch() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(scratch_app()) as client:
        yield client


TAKES = "unknown query parameter (takes: cursor, limit, page-size, who)"


def refused(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return [(error["field"], error["message"]) for error in body["errors"]]


@pytest.mark.parametrize(
    ("query", "unknown"),
    [
        ("x=1", ["x"]),
        ("x", ["x"]),  # blank
        ("limit=2&x=1&x=2", ["x"]),  # named once however often it is sent
        ("zeta=1&alpha=2", ["alpha", "zeta"]),  # each, in order
        ("Limit=3", ["Limit"]),  # names are case-sensitive
        ("after=abc", ["after"]),  # the Python name of `cursor`: not what clients send
        ("size=3", ["size"]),  # likewise for the sub-dependency's `page-size`
    ],
)
async def test_an_unknown_query_parameter_is_422_naming_it_and_the_known_ones(
    scratch, query: str, unknown: list[str]
):
    response = await scratch.get(f"/items?{query}")
    assert refused(response) == [(f"query.{name}", TAKES) for name in unknown]


async def test_declared_parameters_pass_those_of_dependencies_and_aliases_too(scratch):
    response = await scratch.get("/items?limit=2&cursor=c&who=me&page-size=7")
    assert response.status_code == 200, response.text
    assert response.json() == {"limit": 2, "after": "c", "owner": "me:7"}
    for path in ("/items", "/items?", "/items?limit=3"):
        assert (await scratch.get(path)).status_code == 200, path


async def test_a_route_without_query_parameters_takes_none(scratch):
    assert (await scratch.get("/items/a")).status_code == 200
    response = await scratch.get("/items/a?limit=1")
    assert refused(response) == [("query.limit", "unknown query parameter (takes: none)")]


async def test_an_unknown_parameter_is_refused_before_the_body_is_read(scratch):
    """The query is checked first: the answer names it alone, whatever the body is."""
    response = await scratch.post("/items?dry=true", json={"name": "a"})
    assert (response.status_code, response.json()) == (201, {"name": "a", "dry": True})
    response = await scratch.post("/items?x=1", content=b"{not json")
    assert refused(response) == [("query.x", "unknown query parameter (takes: dry)")]


async def test_the_api_routes_refuse_unknown_parameters_and_take_their_own(anon):
    response = await anon.get("/country?limit=2&limt=3")
    assert refused(response) == [
        ("query.limt", "unknown query parameter (takes: cursor, limit, offset, q)")
    ]
    response = await anon.get("/country/GB?q=x")
    assert refused(response) == [("query.q", "unknown query parameter (takes: none)")]
    response = await anon.get("/country/GB/subdivisions?limit=1&page=2")
    assert refused(response) == [
        ("query.page", "unknown query parameter (takes: cursor, limit, offset, q)")
    ]
    response = await anon.get("/country?limit=2&offset=1&q=a")
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 2
    assert (await anon.get("/country/GB/subdivisions?limit=1&q=a")).status_code == 200

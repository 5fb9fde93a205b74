"""src/kit/route.py: a resource's route refuses query parameters it does not declare (422,
naming each and the ones it takes), inside its handler; declared ones pass. Duplicate JSON
keys (the strict body the same route class reads) are tests/kit/test_bodies.py's."""

from collections.abc import AsyncIterator
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, StringConstraints

from src import errors
from src.kit.route import ResourceRoute, direct_handler
from tests.helpers import asgi_client


def page_size(size: Annotated[int, Query(alias="page-size")] = 10) -> int:
    return size


def tenant(who: str | None = None, size: int = Depends(page_size)) -> str:
    """A dependency with a query parameter of its own, and one of its sub-dependency's."""
    return f"{who}:{size}"


class Item(BaseModel):
    name: str


def scratch_router() -> APIRouter:
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

    return router


def scratch_app() -> FastAPI:
    app = FastAPI()
    app.include_router(scratch_router())
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


# --- routes called directly: the same answers as FastAPI's own handling ------------------


class Colour(StrEnum):
    red = "red"
    blue = "blue"


def must_be_even(value: int) -> int:
    if value % 2:
        raise ValueError("must be even")
    return value


Code = Annotated[str, Path(pattern=r"^[A-Za-z]{2,3}$")]
Cursor = Annotated[str, StringConstraints(pattern=r"^[a-z]+$"), AfterValidator(str.upper)]


async def shapes(
    request: Request,
    code: Code,
    limit: Annotated[int, Query(ge=1, le=250)] = 50,
    after: Annotated[Cursor | None, Query(alias="cursor")] = None,
    even: Annotated[int, AfterValidator(must_be_even)] = 0,
    colour: Colour | None = None,
    mode: Literal["fast", "slow"] = "fast",
    flag: bool = False,
    day: date | None = None,
    ref: UUID | None = None,
    needed: Annotated[int | None, Query()] = ...,  # required, may be null
    checked: Annotated[int, Query(ge=10, validate_default=True)] = 1,
) -> Response:
    values = {
        "code": code, "limit": limit, "after": after, "even": even, "colour": colour,
        "mode": mode, "flag": flag, "day": day, "ref": ref, "needed": needed,
        "checked": checked, "path": request.url.path,
    }  # fmt: skip
    return JSONResponse(jsonable_encoder(values))


async def no_request(code: Code) -> Response:
    return JSONResponse({"code": code})


def shapes_app(route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(route_class=route_class)
    router.get("/shapes/{code}")(shapes)
    router.get("/bare/{code}")(no_request)
    app = FastAPI()  # FastAPI's own 422 body: every field of every error
    app.include_router(router)
    return app


QUERIES = [
    "needed=1",
    "needed=1&limit=250&cursor=abc&even=4&colour=red&mode=slow&flag=yes&day=2026-12-06"
    "&ref=12345678-1234-5678-1234-567812345678&checked=10",
    "",  # the required one missing, the one validated by default too small
    "needed=",
    "needed=x&limit=0&cursor=ABC&even=3&colour=green&mode=medium&flag=maybe&day=2026-13-01"
    "&ref=nope&checked=9",
    "needed=1&limit=&cursor=&even=&colour=&flag=",
    "needed=1&limit=2&limit=3",
    "needed=1&limit=1e3",
    "needed=1&limit=%C3%A9",
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("path", ["/shapes/gb", "/shapes/GBR", "/shapes/G1", "/shapes/abcd"])
async def test_a_direct_route_answers_exactly_as_fastapi_does(path: str, query: str):
    async with (
        asgi_client(shapes_app(ResourceRoute)) as direct,
        asgi_client(shapes_app(APIRoute)) as fastapi,
    ):
        ours, theirs = await direct.get(f"{path}?{query}"), await fastapi.get(f"{path}?{query}")
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
        bare = f"/bare/{path.rsplit('/', 1)[1]}"
        ours, theirs = await direct.get(bare), await fastapi.get(bare)
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())


def test_only_routes_taking_path_and_query_values_are_called_directly():
    routes = {(sorted(route.methods)[0], route.path): route for route in scratch_router().routes}
    shaped = APIRouter(route_class=ResourceRoute)
    shaped.get("/shapes/{code}")(shapes)
    shaped.get("/bare/{code}")(no_request)
    assert all(direct_handler(route) is not None for route in shaped.routes)
    assert direct_handler(routes["GET", "/items/{key}"]) is None  # answers a dict: serialized
    assert direct_handler(routes["GET", "/items"]) is None  # a dependency
    assert direct_handler(routes["POST", "/items"]) is None  # a body

    router = APIRouter(route_class=ResourceRoute)

    @router.get("/tags")
    async def tags(tag: Annotated[list[str] | None, Query()] = None) -> Response:
        return JSONResponse(tag)

    @router.get("/agent")
    async def agent(user_agent: Annotated[str, Header()]) -> Response:
        return JSONResponse(user_agent)

    @router.get("/sync")
    def sync(code: str) -> Response:
        return JSONResponse(code)

    @router.get("/guarded", dependencies=[Depends(page_size)])
    async def guarded() -> Response:
        return JSONResponse(None)

    @router.get("/unresolved", response_model=None)
    async def unresolved(code: str) -> "NotImportedHere":  # type: ignore[name-defined]  # noqa: F821
        return JSONResponse(code)

    assert [direct_handler(route) for route in router.routes] == [None] * 5

"""The ceiling searches and pages like the app: the same statement shape, the same bodies
(bench/run.py checks BODY_PATHS again before loading it)."""

import pytest
from asgi_lifespan import LifespanManager

from bench.ceiling_app import create_ceiling_app
from bench.run import BODY_PATHS, SEARCHES
from tests.helpers import asgi_client

PATHS = [
    *BODY_PATHS["search"],
    *(f"/country?q={q}" for q in SEARCHES),
    "/country?q=%20Land%20",  # trimmed
    "/country?q=it%27s",  # quoted into the SQL
    "/country?q=_",  # LIKE's wildcards stand for themselves
    "/country?q=%25",
    "/country?q=an&limit=5&cursor=R0I",  # the cursor of a `next` link
    "/country?limit=3&cursor=R0I",
]


@pytest.fixture
async def ceiling(settings, db):
    url = settings.async_url.render_as_string(hide_password=False)
    async with LifespanManager(create_ceiling_app(url, settings.db_pool_size)) as manager:
        async with asgi_client(manager.app) as client:
            yield client


@pytest.mark.parametrize("path", PATHS)
async def test_searches_like_the_app(anon, ceiling, path):
    expected, answer = await anon.get(path), await ceiling.get(path)
    assert (answer.status_code, answer.json()) == (expected.status_code, expected.json())


@pytest.mark.parametrize("path", ["/country?q=", "/country?q=%20", "/country?q=a%00b"])
async def test_refuses_what_the_app_refuses(anon, ceiling, path):
    assert (await anon.get(path)).status_code == 422
    assert (await ceiling.get(path)).status_code == 422


async def test_searches_match_several_rows_and_pages(anon):
    """SEARCHES load what a search costs: several rows each, one over a page of five."""
    totals = {q: (await anon.get(f"/country?q={q}")).json()["total"] for q in SEARCHES}
    assert min(totals.values()) >= 2, totals
    assert (await anon.get(BODY_PATHS["search"][1])).json()["next"] is not None

"""The bench compares like with like: the floor and the ceiling answer the benchmarked
reads with the same bodies as the real app (bench/run.py checks it again before loading)."""

import httpx
import pytest
from asgi_lifespan import LifespanManager

from bench.ceiling_app import create_ceiling_app
from bench.floor_app import create_floor_app
from bench.run import SAME_BODY_PATHS


@pytest.fixture(params=["floor", "ceiling"])
async def other(request, settings, db):
    if request.param == "floor":
        app = create_floor_app(settings)
    else:
        url = settings.async_url.render_as_string(hide_password=False)
        app = create_ceiling_app(url, settings.db_pool_size)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("path", [*SAME_BODY_PATHS, "/country/ZZ"])
async def test_answers_like_the_app(anon, other, path):
    expected, answer = await anon.get(path), await other.get(path)
    assert answer.status_code == expected.status_code
    assert answer.json() == expected.json()


async def test_the_floor_validates_like_the_app(anon, settings, db):
    async with LifespanManager(create_floor_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as floor:
            for path in ("/country/G1", "/country?limit=0", "/country?offset=-1"):
                expected, answer = await anon.get(path), await floor.get(path)
                assert (answer.status_code, answer.json()) == (422, expected.json()), path
            # Only the two benchmarked reads exist there: writes are not the floor's job.
            assert (await floor.post("/country", json={})).status_code == 405

"""The web ceiling answers the benchmarked reads like the real app, 304s included
(bench/run.py checks the bodies again before loading it)."""

import httpx
import pytest
from asgi_lifespan import LifespanManager

from bench.run import SAME_BODY_PATHS
from bench.web_ceiling_app import create_web_ceiling_app


@pytest.fixture
async def web(settings, db):
    async with LifespanManager(create_web_ceiling_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize(
    "path", [*SAME_BODY_PATHS, "/country/ZZ", "/country/G1", "/country?limit=3&cursor=R0I"]
)
async def test_answers_like_the_app(anon, web, path):
    expected, answer = await anon.get(path), await web.get(path)
    assert answer.status_code == expected.status_code
    assert answer.json() == expected.json()
    if expected.status_code == 200:
        assert answer.headers["etag"] == expected.headers["etag"]
        again = await web.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304

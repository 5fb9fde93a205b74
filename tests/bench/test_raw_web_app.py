"""The raw web limit answers `GET /country/{code}` with the app's bytes and the headers of
the app's cache hit, so cached app / raw compares like with like."""

import pytest

from bench.raw_web_app import RawWebApp
from tests.helpers import asgi_client


@pytest.fixture
async def raw(settings, db):
    app = RawWebApp(settings.async_url.render_as_string(hide_password=False))
    await app.load()  # its lifespan's startup (test_serves_its_lifespan runs that)
    async with asgi_client(app) as client:
        yield client


@pytest.mark.parametrize("path", ["/country/GB", "/country/gbr", "/country/ZZ"])
async def test_answers_like_the_apps_cache_hit(anon, raw, path):
    await anon.get(path)  # kept by the response cache once subscribed (a miss sends
    # the same headers)
    expected, answer = await anon.get(path), await raw.get(path)
    assert (answer.status_code, answer.content) == (expected.status_code, expected.content)
    assert sorted(answer.headers.keys()) == sorted(expected.headers.keys())
    for name in ("etag", "cache-control", "content-type", "x-content-type-options"):
        assert answer.headers.get(name) == expected.headers.get(name), name


async def test_request_ids_are_taken_or_made(raw):
    given = await raw.get("/country/GB", headers={"X-Request-ID": "bench-1"})
    made = [await raw.get("/country/GB", headers={"X-Request-ID": "not valid!"}) for _ in "ab"]
    assert given.headers["x-request-id"] == "bench-1"
    assert len({answer.headers["x-request-id"] for answer in made}) == 2


async def test_serves_its_lifespan(settings, db):
    """uvicorn runs the lifespan: startup loads the answers, a bad database fails it."""
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    app = RawWebApp(settings.async_url.render_as_string(hide_password=False))
    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert "GBR" in app.answers

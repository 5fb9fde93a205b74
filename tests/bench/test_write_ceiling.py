"""The write ceiling answers a whole write cycle like the app: the same statuses, bodies
(but the timestamp), Location, ETags a later If-Match can use, and the same header names."""

import httpx
import pytest
from asgi_lifespan import LifespanManager

from bench.ceiling_app import create_ceiling_app, etag_for
from tests.helpers import API_KEY, asgi_client

CODE = "XA"
# Every step of the cycle and its refusals: (method, path, JSON body, extra headers).
# "{etag}" is the ETag the server's own 201 gave; "{stale}" one no version has.
STEPS = [
    ("POST", "/country", {"alpha2": "xa", "alpha3": "XAX", "name": "Bench XA"}, {"X-API-Key": ""}),
    ("POST", "/country", {"alpha2": " xa", "alpha3": "xax", "name": " Bench XA "}, {}),
    ("POST", "/country", {"alpha2": "XA", "alpha3": "XAY", "name": "Twice"}, {}),
    ("POST", "/country", {"alpha2": "XB", "alpha3": "XAX", "name": "Twice"}, {}),
    ("GET", f"/country/{CODE}", None, {}),
    ("PATCH", f"/country/{CODE}", {"name": "Changed"}, {"If-Match": "{stale}"}),
    ("PATCH", f"/country/{CODE}", {"name": "Changed", "numeric": "999"}, {"If-Match": "{etag}"}),
    ("GET", f"/country/{CODE}", None, {}),
    ("PATCH", f"/country/{CODE}", {"official_name": "Republic of XA"}, {}),
    ("DELETE", f"/country/{CODE}", None, {"If-Match": "{stale}"}),
    ("DELETE", f"/country/{CODE}", None, {"If-Match": "*"}),
    ("DELETE", f"/country/{CODE}", None, {}),
    ("PATCH", f"/country/{CODE}", {"name": "Gone"}, {}),
    ("POST", "/country", {"alpha2": "X1", "alpha3": "XAX", "name": "Bad"}, {}),
    ("POST", "/country", {"alpha2": "XA", "alpha3": "XAX", "name": "Bad", "extra": 1}, {}),
    ("PATCH", f"/country/{CODE}", {}, {}),
]
# Their statuses in the app, which the ceiling must give too.
STATUSES = [401, 201, 409, 409, 200, 412, 204, 200, 204, 412, 204, 404, 404, 422, 422, 422]


@pytest.fixture
async def ceiling(settings, db):
    url = settings.async_url.render_as_string(hide_password=False)
    app = create_ceiling_app(url, settings.db_pool_size, api_key=API_KEY)
    async with LifespanManager(app) as manager:
        async with asgi_client(manager.app, {"X-API-Key": API_KEY}) as client:
            yield client


async def run_cycle(client: httpx.AsyncClient) -> list[httpx.Response]:
    answers, etag = [], ""
    for method, path, body, headers in STEPS:
        sent = {k: v.format(etag=etag, stale='"0"') for k, v in headers.items()}
        sent["X-Request-ID"] = f"w-{CODE}-{len(answers)}"
        answer = await client.request(method, path, json=body, headers=sent)
        if method == "POST" and answer.status_code == 201:
            etag = answer.headers["etag"]
        answers.append(answer)
    return answers


def comparable(answer: httpx.Response) -> tuple:
    """What must be equal: status, body (no timestamp; error bodies but their field list),
    Location, the request ID echoed, and the header names."""
    body = answer.json() if answer.content else None
    if isinstance(body, dict):
        body.pop("created_at", None)
        body.pop("errors", None)
        if answer.status_code == 422:
            body.pop("detail")  # the app names the failed check, the ceiling does not
    return (
        answer.status_code,
        body,
        answer.headers.get("location"),
        answer.headers.get("x-request-id"),
        sorted(answer.headers.keys()),
    )


async def test_a_write_cycle_answers_like_the_app(client, ceiling):
    expected = await run_cycle(client)
    assert [answer.status_code for answer in expected] == STATUSES
    answers = await run_cycle(ceiling)
    # The ceiling's GETs are its reads: no ETag or nosniff, as the app's bodies otherwise.
    for step, (want, got) in enumerate(zip(expected, answers, strict=True)):
        if STEPS[step][0] == "GET":
            assert comparable(got)[:2] == comparable(want)[:2], step
        else:
            assert comparable(got) == comparable(want), (step, STEPS[step])
    created = answers[1]
    assert created.headers["etag"] == etag_for(created.content)
    assert answers[7].json()["name"] == "Changed"


async def test_writes_need_the_key(settings, db):
    url = settings.async_url.render_as_string(hide_password=False)
    async with LifespanManager(create_ceiling_app(url, 2)) as manager:
        async with asgi_client(manager.app, {"X-API-Key": API_KEY}) as client:
            answer = await client.delete("/country/GB")
    assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized")

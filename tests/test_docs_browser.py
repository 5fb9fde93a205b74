"""/docs (Swagger UI) and /redoc (ReDoc) in a real headless browser, offline.

Debian's chromium (CI installs it: .ci/run) driven by Playwright, never a downloaded
browser. Every request the page makes is checked: anything not for the app on 127.0.0.1
is aborted and fails the test, so the pages must work from the installed package alone.
The same browser checks that the schema's patterns mean in JavaScript what they mean here.
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Request, Route, sync_playwright

from src.kit.pagination import CURSOR_PATTERN
from src.kit.text import TEXT_PATTERN
from tests.helpers import child_env, serve_api

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing of the browser's own going out (updates, sync, safe browsing).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("DOCS_SCREENSHOTS")  # a folder: keep a picture of each page


def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        raise AssertionError(f"{CHROMIUM} is not installed, and CI must run this test")
    pytest.skip("chromium not installed (local run only; CI installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def docs_server(database_url: str, migrated) -> Iterator[str]:
    """The app as the image serves it (`python -m src.serve`: no server banner)."""
    with serve_api(child_env(database_url), seconds=30) as base:
        yield base


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", ".opblock"),  # Swagger UI: one block per operation
        ("/redoc", "[data-section-id*='/operation/']"),  # ReDoc: one section per operation
    ],
)
def test_docs_render_every_operation_offline(browser: Browser, docs_server: str, path, rendered):
    spec = httpx.get(f"{docs_server}/openapi.json").json()
    operations = [op for item in spec["paths"].values() for op in item.values()]
    context = browser.new_context(service_workers="block")
    requested: list[str] = []
    outside: list[str] = []
    responses = []

    def only_local(route: Route, request: Request) -> None:
        if is_local(request.url):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    page.on("response", lambda response: responses.append(response))
    refused: list[str] = []  # by the page's Content-Security-Policy, before any network

    def failed(request: Request) -> None:
        if request.failure in ("csp", "net::ERR_BLOCKED_BY_CSP"):
            refused.append(request.url)

    page.on("requestfailed", failed)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        document = page.goto(f"{docs_server}{path}")
        assert document is not None and document.status == 200
        assert "default-src 'self'" in document.headers["content-security-policy"]
        page.wait_for_selector(rendered, timeout=30_000)
        page.wait_for_load_state("networkidle")
        assert page.locator(rendered).count() == len(operations)
        text = page.inner_text("body")
        for operation in operations:
            assert operation["summary"] in text, (path, operation["summary"])
        if SCREENSHOTS:
            page.screenshot(path=f"{SCREENSHOTS}/{path.strip('/')}.png", full_page=False)
    finally:
        context.close()

    assert outside == [], f"{path} tried to leave the machine"
    assert [url for url in requested if not is_local(url)] == [
        url for url in refused if not is_local(url)
    ]
    assert errors == [], errors
    served = [r for r in responses if not r.url.startswith(("data:", "blob:"))]
    assert any(r.url.endswith(".js") for r in served)  # the UI's script, from the package
    for response in served:
        assert response.status == 200, (response.url, response.status)
        headers = response.headers
        assert headers.get("x-content-type-options") == "nosniff", response.url
        assert headers.get("x-request-id"), response.url
        assert "server" not in headers, response.url


def test_swagger_ui_calls_the_api_from_the_page(browser: Browser, docs_server: str):
    """Try it out: the page's policy lets it reach the API it documents (same origin)."""
    context = browser.new_context(service_workers="block")
    context.route(
        "**/*", lambda route, request: route.continue_() if is_local(request.url) else route.abort()
    )
    page = context.new_page()
    try:
        page.goto(f"{docs_server}/docs")
        operation = page.locator("#operations-country-get_country_country__code__get")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.locator("input[placeholder='code']").fill("gbr")
        with page.expect_response(f"{docs_server}/country/gbr") as called:
            operation.get_by_role("button", name="Execute").click()
        assert called.value.status == 200
        shown = operation.locator(".live-responses-table tbody .response-col_status")
        assert shown.inner_text(timeout=10_000).strip() == "200"
        assert '"alpha2": "GB"' in operation.locator(".live-responses-table").inner_text()
    finally:
        context.close()


def test_patterns_mean_the_same_in_the_browser(browser: Browser):
    """JSON Schema patterns are ECMA-262: the browser's RegExp agrees with Python's `re`
    (which tests/test_schemas.py holds to the validation) on every first-plane character."""
    texts = [
        shape.format(chr(code))
        for shape in ("{}", "a{}", "{}a", " {} ")
        for code in range(0x10000)
        if not 0xD800 <= code < 0xE000
    ]
    cursors = ["AB", "ABC", "ABCD", "ABCDE", "A" * 64, "A" * 65, "A", "_-", "a=", "R0I"]
    page = browser.new_page()
    try:
        for pattern, samples in ((TEXT_PATTERN, texts), (CURSOR_PATTERN, cursors)):
            in_browser = page.evaluate(
                "([pattern, samples]) => { const regexp = new RegExp(pattern, 'u');"
                " return samples.map(sample => regexp.test(sample)); }",
                [pattern, samples],
            )
            in_python = [re.search(pattern, sample) is not None for sample in samples]
            pairs = zip(samples, in_browser, in_python, strict=True)
            differ = [sample for sample, js, py in pairs if js != py]
            assert differ == [], [ascii(s) for s in differ[:10]]
    finally:
        page.close()

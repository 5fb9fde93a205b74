"""`pipenv run new-resource` as a cloner uses it (slow tier): in a scratch copy of the
project, scaffold /currency, autogenerate and apply its revision, run its own tests, and
serve it from two processes: CRUD, the key, 405, HEAD, ETag, OpenAPI's words, and cached
reads that see a psql UPDATE and the other process's writes."""

import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from devtools.new_resource import ScaffoldError, scaffold
from src.config import PROJECT_ROOT
from tests.helpers import (
    API_KEY,
    APP_ROLE,
    APP_ROLE_PASSWORD,
    child_env,
    copy_project,
    eventually,
    fresh_database,
    run_python,
    serve_api,
)

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": API_KEY}


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def cache_state(base: str) -> str:
    return httpx.get(f"{base}/ready", timeout=5).json().get("cache", "")


def name_of(base: str, code: str) -> str | None:
    response = httpx.get(f"{base}/currency/{code}", timeout=5)
    return response.json()["name"] if response.status_code == 200 else None


def seen_within(check, what: str) -> float:
    """Seconds until `check()` holds (failing after 10 s): how long a change took to show."""
    started = time.monotonic()
    eventually(check, what, seconds=10)
    return time.monotonic() - started


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project with its docs and test harness (the scaffold writes both)."""
    project = copy_project(tmp_path / "project")
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    (project / "tests").mkdir()
    for name in ("__init__.py", "conftest.py", "helpers.py"):
        shutil.copy2(PROJECT_ROOT / "tests" / name, project / "tests" / name)
    return project


def test_a_scaffolded_resource_is_served_cached_guarded_and_documented(
    project: Path, sync_engine: Engine
):
    with fresh_database(sync_engine) as url:
        env = child_env(url, POSTGRES_APP_USER=APP_ROLE, POSTGRES_APP_PASSWORD=APP_ROLE_PASSWORD)
        ok(run_python("-m", "devtools.new_resource", "currency", cwd=project, env=env))
        ok(run_python("-m", "alembic_pg_guard", "migrate", cwd=project, env=env))
        autogenerate = ("-m", "alembic", "revision", "--autogenerate", "-m", "add currency")
        made = ok(run_python(*autogenerate, cwd=project, env=env))
        (revision,) = (project / "alembic" / "versions").glob("*_add_currency.py")
        source = revision.read_text()
        assert "op.create_table(" in source and "currency_cache_notify" in source, made
        assert source.index("op.create_table(") < source.index("CREATE OR REPLACE TRIGGER")
        ok(run_python("-m", "alembic_pg_guard", "migrate", cwd=project, env=env))
        gates = run_python("-m", "alembic_pg_guard", "check", "all", cwd=project, env=env)
        assert gates.returncode == 0, gates.stdout + gates.stderr
        # The scaffolded tests, as `pipenv run test` runs them in the copy.
        tests = run_python(
            "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/currency",
            cwd=project, env={**env, "TEST_DATABASE_URL": env["DATABASE_URL"]}, timeout=300,
        )  # fmt: skip
        assert tests.returncode == 0, tests.stdout[-3000:]

        with serve_api(env, cwd=project) as a, serve_api(env, cwd=project) as b:
            for base in (a, b):
                eventually(lambda base=base: cache_state(base) == "subscribed", f"{base} cache")
            check_crud_and_http(a)
            check_openapi_words(a)
            check_convergence(a, b, url)


def check_crud_and_http(base: str) -> None:
    eur = {"code": "EUR", "name": "Euro"}
    assert httpx.post(f"{base}/currency", json=eur).status_code == 401
    created = httpx.post(f"{base}/currency", json=eur, headers=KEY)
    assert created.status_code == 201 and created.headers["location"] == "/currency/EUR"
    assert httpx.post(f"{base}/currency", json=eur, headers=KEY).status_code == 409
    got = httpx.get(f"{base}/currency/eur")
    assert got.status_code == 200 and got.json() == eur
    etag = got.headers["etag"]
    assert httpx.get(f"{base}/currency/eur", headers={"If-None-Match": etag}).status_code == 304
    head = httpx.head(f"{base}/currency/EUR")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"]
    put = httpx.put(f"{base}/currency/EUR", json=eur, headers=KEY)
    assert put.status_code == 405
    assert set(put.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}
    patched = httpx.patch(f"{base}/currency/EUR", json={"name": "Euro (EU)"}, headers=KEY)
    assert patched.status_code == 204
    assert httpx.delete(f"{base}/currency/EUR", headers=KEY).status_code == 204
    missing = httpx.get(f"{base}/currency/EUR")
    assert missing.status_code == 404 and missing.json()["detail"] == "currency 'EUR' not found"


def check_openapi_words(base: str) -> None:
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert set(paths["/currency/{code}"]) == {"get", "patch", "delete"}
    assert paths["/currency/{code}"]["get"]["responses"]["404"]["description"] == (
        "No currency with this code"
    )
    assert paths["/currency"]["post"]["responses"]["409"]["description"] == (
        "Another currency already has this code"
    )


def psql(url, statement: str, *, announced: bool = True) -> None:
    """`statement` as the owner; unannounced: no trigger fires (session_replication_role)."""
    owner = create_engine(url, poolclass=NullPool)
    try:
        with owner.begin() as conn:
            if not announced:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(statement))
    finally:
        owner.dispose()


def check_convergence(a: str, b: str, url) -> None:
    """Each process caches its reads (an unannounced change stays unseen); any write that
    fires the table's trigger (psql, the other process) reaches both. The delays go to the
    test's output."""
    assert httpx.post(f"{a}/currency", json={"code": "GBP", "name": "Pound"}, headers=KEY)
    for base in (a, b):
        assert name_of(base, "GBP") == "Pound"  # now cached in each
    psql(url, "UPDATE currency SET name = 'Quid' WHERE code = 'GBP'", announced=False)
    assert name_of(a, "GBP") == name_of(b, "GBP") == "Pound", "its reads are not cached"
    psql(url, "UPDATE currency SET name = 'Sterling' WHERE code = 'GBP'")
    by_psql = seen_within(lambda: name_of(b, "GBP") == "Sterling", "a psql UPDATE")
    assert httpx.post(f"{b}/currency", json={"code": "JPY", "name": "Yen"}, headers=KEY)
    listed = lambda: "JPY" in [i["code"] for i in httpx.get(f"{a}/currency").json()["items"]]  # noqa: E731
    other = seen_within(listed, "the other process's write")
    print(f"seen after: psql UPDATE {by_psql * 1000:.0f} ms, other process {other * 1000:.0f} ms")


def test_new_resource_refuses_a_bad_or_taken_name(tmp_path: Path):
    project = copy_project(tmp_path / "project")
    for name, reason in (
        ("Currency", "lowercase"),
        ("class", "lowercase"),
        ("country", "exists already"),
    ):
        with pytest.raises(ScaffoldError, match=reason):
            scaffold(name, project)
    assert not re.search(r"\bclass\b.*Class", (project / "src" / "models.py").read_text())

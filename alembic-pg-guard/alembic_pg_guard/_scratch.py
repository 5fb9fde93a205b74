"""Throwaway databases for the gates, compat and rehearse: on a server given as a URL
(`--scratch-url`, ALEMBIC_PG_GUARD_SCRATCH_URL) or by the project's `scratch_server`
hook in alembic.ini (a context manager yielding a server URL, e.g. an embedded cluster)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.config import Config
from sqlalchemy import URL, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from alembic_pg_guard._config import SECTION, hook
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._settings import sync_url

ENV_URL = "ALEMBIC_PG_GUARD_SCRATCH_URL"


@contextmanager
def scratch_server(cfg: Config, url: str | None = None) -> Iterator[URL]:
    """A server where the guard may create databases: `url`, else the environment's, else
    the project's hook; none of them is a GuardError saying how to give one."""
    given = url or os.environ.get(ENV_URL)
    if given:
        yield sync_url(given)
        return
    factory = hook(cfg, "scratch_server")
    if factory is None:
        raise GuardError(
            f"this needs a throwaway PostgreSQL: pass --scratch-url (or set {ENV_URL}) to a "
            f"server where you may CREATE DATABASE, or name a scratch_server in [{SECTION}] "
            "of alembic.ini"
        )
    with factory() as server:
        yield sync_url(server)


def _admin(server: URL):
    return create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def create_database(server: URL, prefix: str = "guard") -> URL:
    """A new empty database on `server` (its URL): the caller drops it (drop_database)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = _admin(server)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        raise GuardError(
            f"cannot create a throwaway database on {server.host}:{server.port}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None
    finally:
        engine.dispose()
    return server.set(database=name)


def drop_database(server: URL, database: URL) -> None:
    """Drop `database`, made by create_database on `server`."""
    engine = _admin(server)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database.database}" WITH (FORCE)')
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server: URL, prefix: str = "guard") -> Iterator[URL]:
    url = create_database(server, prefix)
    try:
        yield url
    finally:
        drop_database(server, url)

"""This project's hooks for alembic-pg-guard's developer commands, named in alembic.ini's
[alembic_pg_guard] section: where the gates, compat and rehearse get a throwaway
PostgreSQL, and the environment of the previous release's tests (check-compat)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

from devtools.embedded_pg import throwaway
from src.config import Settings


@contextmanager
def scratch_server() -> Iterator[str]:
    """A throwaway embedded cluster (its superuser's URL), destroyed on exit."""
    with throwaway(prefix="migration-check-", user="check", database="check") as pg:
        yield pg.url


def compat_env(database_url: str) -> dict[str, str]:
    """The base's tests get none of this project's settings from here (the worktree has no
    .env): only their database, by TEST_DATABASE_URL."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env.pop("PIPENV_ACTIVE", None)
    return env | {"TEST_DATABASE_URL": database_url}

"""Migrations go to PostgreSQL directly, never through a pooler: their advisory lock is a
session's, and a transaction pooler may run consecutive statements on other sessions."""

import pytest
from alembic_pg_guard import GuardError
from sqlalchemy import Engine

from src.config import PROJECT_ROOT, Settings
from tests.helpers import child_env, one_line_failure, pgbouncer, run_python, upgrade

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def test_the_runner_refuses_a_pooler_in_one_line(settings: Settings, migrated: Engine):
    server = settings.sync_url
    with pgbouncer(server, {server.username: server.password}, pool_mode="transaction") as port:
        url = f"postgresql://{server.username}:{server.password}@127.0.0.1:{port}/{server.database}"
        with pytest.raises(GuardError, match="is a connection pooler") as info:
            upgrade(settings.for_database(url))
        assert "\n" not in str(info.value) and "APP_DATABASE_URL" in str(info.value)
        for args in (["-m", "alembic_pg_guard", "migrate"], ["-m", "alembic", "upgrade", "head"]):
            line = one_line_failure(run_python(*args, cwd=PROJECT_ROOT, env=child_env(url)))
            assert "is a connection pooler (PgBouncer?), not PostgreSQL" in line, (args, line)
    assert upgrade(settings).startswith("database already at head")  # direct: fine

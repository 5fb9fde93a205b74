"""Racing migrators: several processes migrate one empty database at the same time."""

import re
from collections import Counter

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from src.config import PROJECT_ROOT
from tests.helpers import (
    child_env,
    current_version,
    fresh_database,
    popen_python,
    script_directory,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

RUNNING_UPGRADE = re.compile(r"Running upgrade (\S*) -> (\w+)")


@pytest.mark.parametrize(
    "migrator",
    [("-m", "alembic", "upgrade", "head"), ("-m", "alembic_pg_guard", "migrate")],
    ids=["alembic-upgrade-head", "guard-migrate"],
)
def test_racing_migrators_apply_each_revision_once(sync_engine: Engine, migrator):
    """Five migrators start at once on an empty database: all succeed, each revision
    runs exactly once (the advisory lock serialises them), the database ends at head."""
    script = script_directory()
    expected = {rev.revision for rev in script.walk_revisions("base", "heads")}
    with fresh_database(sync_engine) as url:
        env = child_env(url, MIGRATION_LOCK_WAIT_SECONDS="120")
        procs = [popen_python(*migrator, cwd=PROJECT_ROOT, env=env) for _ in range(5)]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            outputs.append((proc.returncode, out + err))
        for returncode, output in outputs:
            assert returncode == 0, output
        applied = Counter(
            match[1] for _, output in outputs for match in RUNNING_UPGRADE.findall(output)
        )
        assert set(applied) == expected
        assert all(count == 1 for count in applied.values()), applied
        engine = create_engine(url, poolclass=NullPool)
        try:
            assert current_version(engine) == set(script.get_heads())
        finally:
            engine.dispose()

"""pytest-alembic's built-in tests (single head, upgrade, models match the DDL, up/down
consistency) and its experimental downgrade-leaves-no-trace, each on a fresh database.

The built-ins are collected by importing them here (see `__all__`); they run on the
`alembic_config` and `alembic_engine` fixtures of tests/migrations/conftest.py.
"""

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from pytest_alembic import runner as pytest_alembic_runner
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace as leaves_no_trace
from sqlalchemy import Engine

from tests.helpers import revisions_in_order, script_directory

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

__all__ = [  # pytest-alembic's built-in tests, collected here against our fixtures
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


def autocommit_revisions(script: ScriptDirectory) -> list[str]:
    """Revisions that step out of the transaction (CONCURRENTLY, VALIDATE, ...)."""
    return [
        rev.revision
        for rev in revisions_in_order(script)
        if "autocommit_block" in Path(rev.path).read_text()
    ]


def test_downgrade_leaves_no_trace_before_autocommit_revisions(
    alembic_config: Config, alembic_engine: Engine, scratch_alembic: Path
):
    """pytest-alembic's experimental test, over the prefix of the history it can handle.

    It runs every upgrade/downgrade inside one outer transaction and rolls back to
    savepoints, so a revision with an `autocommit_block()` (which must commit) cannot
    run under it. The stairway test (test_stairway.py) checks the whole history the same
    way (schema identical after up+down), one real transaction per step.
    """
    script = script_directory()
    ordered = [rev.revision for rev in revisions_in_order(script)]
    blocked = autocommit_revisions(script)
    prefix = ordered[: ordered.index(blocked[0])] if blocked else ordered
    if len(prefix) < 2:
        pytest.skip(f"the history before the first autocommit revision is too short: {prefix}")
    keep = set(prefix)
    for rev in script.walk_revisions("base", "heads"):
        if rev.revision not in keep:
            (scratch_alembic / "versions" / Path(rev.path).name).unlink()
    alembic_config.set_main_option("script_location", str(scratch_alembic))
    with pytest_alembic_runner(
        config=PytestAlembicConfig(alembic_config=alembic_config), engine=alembic_engine
    ) as runner:
        assert runner.history.revisions[1:-1] == prefix  # base, ..., heads
        leaves_no_trace(runner)


def test_experimental_downgrade_leaves_no_trace_cannot_run_autocommit_revisions(
    alembic_config: Config, alembic_engine: Engine
):
    """Documents the limit above: on the whole history it fails at the first such revision."""
    blocked = autocommit_revisions(script_directory())
    if not blocked:
        leaves_no_trace_on_full_history(alembic_config, alembic_engine)  # must pass then
        return
    # alembic cannot commit a transaction it did not begin: it asserts in autocommit_block.
    with pytest.raises(AssertionError) as failure:
        leaves_no_trace_on_full_history(alembic_config, alembic_engine)
    assert "autocommit_block" in {entry.name for entry in failure.traceback}


def leaves_no_trace_on_full_history(cfg: Config, engine: Engine) -> None:
    with pytest_alembic_runner(
        config=PytestAlembicConfig(alembic_config=cfg), engine=engine
    ) as runner:
        leaves_no_trace(runner)

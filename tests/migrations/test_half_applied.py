"""A revision that fails after its autocommit_block committed (alembic-pg-guard): not recorded,
one line saying what stays applied, and a rerun that trips on that part says so too."""

from pathlib import Path

import pytest
from alembic_pg_guard import HISTORY_TABLE, GuardError
from sqlalchemy import Engine, inspect, text

from src.config import Settings
from tests.helpers import (
    current_version,
    fresh_engine,
    scratch_config,
    upgrade,
    write_revision_on_head,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

REVISION = "4a1fa991ed00"


def test_failure_after_an_autocommit_block_names_what_stays_applied(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """add_column, then a concurrent index in an autocommit_block, then bad SQL: the first
    two stay (PostgreSQL committed them), the revision is not recorded, the message lists
    them; the rerun fails on the duplicate column and points at the earlier failed run."""
    head = write_revision_on_head(
        scratch_alembic / "versions",
        REVISION,
        "def upgrade() -> None:\n"
        '    op.add_column("country", sa.Column("half", sa.Text()))\n'
        "    with op.get_context().autocommit_block():\n"
        '        op.create_index("country_half_idx", "country", ["half"],\n'
        "                        postgresql_concurrently=True)\n"
        '    op.execute("SELECT no_such_function()")\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("country", "half")\n',
    )
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        cfg = scratch_config(fresh, scratch_alembic)
        upgrade(fresh)
        with pytest.raises(GuardError) as first:
            upgrade(fresh, cfg=cfg)
        message = str(first.value)
        assert f"revision {REVISION}" in message and "no_such_function" in message, message
        assert "stay applied" in message, message
        assert "ALTER TABLE country ADD COLUMN half TEXT" in message, message
        assert "CREATE INDEX CONCURRENTLY country_half_idx" in message, message
        assert "\n" not in message
        assert current_version(engine) == {head}
        assert "half" in {c["name"] for c in inspect(engine).get_columns("country")}
        with engine.connect() as conn:
            state = conn.scalar(
                text(f"SELECT state FROM {HISTORY_TABLE} WHERE revision = :r"), {"r": REVISION}
            )
        assert state == "partial"

        with pytest.raises(GuardError) as rerun:
            upgrade(fresh, cfg=cfg)
        message = str(rerun.value)
        assert f"revision {REVISION}" in message and "already exists" in message, message
        assert "a failed run at" in message and "left part of this revision applied" in message
        assert current_version(engine) == {head}


def test_any_failing_revision_is_one_line_naming_it(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """No autocommit_block: rolled back whole, and migrate says which revision failed and
    why in one line instead of a traceback."""
    head = write_revision_on_head(
        scratch_alembic / "versions",
        REVISION,
        "def upgrade() -> None:\n"
        '    op.add_column("country", sa.Column("doomed", sa.Text()))\n'
        '    op.execute("SELECT no_such_function()")\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("country", "doomed")\n',
    )
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        cfg = scratch_config(fresh, scratch_alembic)
        upgrade(fresh)
        with pytest.raises(GuardError) as failed:
            upgrade(fresh, cfg=cfg)
        message = str(failed.value)
        assert message.startswith(f"revision {REVISION} "), message
        assert "nothing of it is recorded as applied" in message, message
        assert "no_such_function() does not exist" in message and "\n" not in message
        assert current_version(engine) == {head}
        assert "doomed" not in {c["name"] for c in inspect(engine).get_columns("country")}

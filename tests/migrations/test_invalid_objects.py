"""Leftovers (alembic-pg-guard's leftovers check): an INVALID index or a NOT VALID
constraint the history does not intend is never counted as done, by the revision that
leaves it or at head."""

from pathlib import Path

import pytest
from alembic_pg_guard import GuardError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from src.config import Settings
from tests.helpers import (
    current_version,
    fresh_engine,
    open_snapshot,
    scratch_config,
    script_directory,
    upgrade,
    write_revision,
    write_revision_on_head,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

INDEX = "country_name_plain_idx"
REVISION = "1ea7e0001dea"


def test_rerun_after_a_timed_out_concurrent_build_is_refused(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """A concurrent build with if_not_exists times out waiting for an open snapshot and
    leaves an INVALID index; the rerun's IF NOT EXISTS skips it, and the runner refuses to
    record the revision, saying how to fix it. Dropped, the next run builds it."""
    head = write_revision_on_head(
        scratch_alembic / "versions",
        REVISION,
        "def upgrade() -> None:\n"
        "    with op.get_context().autocommit_block():\n"
        f'        op.create_index("{INDEX}", "country", ["name"],\n'
        "                        postgresql_concurrently=True, if_not_exists=True)\n\n\n"
        "def downgrade() -> None:\n"
        "    with op.get_context().autocommit_block():\n"
        f'        op.drop_index("{INDEX}", table_name="country", postgresql_concurrently=True)\n',
    )
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        limited = fresh.model_copy(
            update={"migration_concurrent_index_timeout_ms": 300, "migration_lock_retries": 0}
        )
        cfg = scratch_config(limited, scratch_alembic)
        upgrade(fresh)
        with engine.connect() as reader:
            open_snapshot(reader, "subdivision")
            with pytest.raises(GuardError, match="waited"):
                upgrade(limited, cfg=cfg)
            reader.rollback()
        assert index_validity(engine) is False  # the leftover

        with pytest.raises(GuardError) as refused:
            upgrade(limited, cfg=cfg)
        message = str(refused.value)
        assert f"revision {REVISION}" in message and "not recorded" in message, message
        assert f"index {INDEX} on country is INVALID" in message, message
        assert f"DROP INDEX CONCURRENTLY {INDEX}" in message, message
        assert current_version(engine) == {head}

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY {INDEX}")
        upgrade(limited, cfg=cfg)
        assert current_version(engine) == {REVISION}
        assert index_validity(engine) is True


def index_validity(engine: Engine) -> bool | None:
    with engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :n"
            ),
            {"n": INDEX},
        )


def test_at_head_an_invalid_index_or_stray_not_valid_constraint_is_refused(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """A database already at head: a failed concurrent build left by hand, then a NOT VALID
    CHECK no revision validates, each stop migrate (and so start) with one line. A revision
    that declares its NOT VALID constraint (not_valid_allow) is accepted."""
    (head,) = script_directory().get_heads()
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        upgrade(fresh)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            with pytest.raises(DBAPIError, match="could not create unique"):
                conn.exec_driver_sql(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON country ((1))")
        with pytest.raises(GuardError) as refused:
            upgrade(fresh)
        assert f"index {INDEX} on country is INVALID" in str(refused.value)
        assert f"the database at {head}" in str(refused.value)

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY {INDEX}")
            conn.exec_driver_sql(
                "ALTER TABLE country ADD CONSTRAINT country_name_short "
                "CHECK (length(name) < 1000) NOT VALID"
            )
        with pytest.raises(GuardError) as refused:
            upgrade(fresh)
        assert "constraint country_name_short on country is NOT VALID" in str(refused.value)

        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE country DROP CONSTRAINT country_name_short")
        write_revision(
            scratch_alembic / "versions",
            REVISION,
            head,
            'not_valid_allow = {"country_name_short": "validated by hand off-peak"}\n\n\n'
            "def upgrade() -> None:\n"
            '    op.execute("ALTER TABLE country ADD CONSTRAINT country_name_short "\n'
            '               "CHECK (length(name) < 1000) NOT VALID")\n\n\n'
            "def downgrade() -> None:\n"
            '    op.drop_constraint("country_name_short", "country")\n',
        )
        upgrade(fresh, cfg=scratch_config(fresh, scratch_alembic))
        assert current_version(engine) == {REVISION}
        assert upgrade(fresh, cfg=scratch_config(fresh, scratch_alembic))

"""The cache's NOTIFY trigger contract (src/kit/triggers.py, on alembic-pg-guard's
NotifyTriggers): written by autogenerate with its table, held by the drift gate, checked
by the cache itself."""

import asyncio
import logging

from alembic.autogenerate import produce_migrations
from alembic.runtime.migration import MigrationContext
from alembic_pg_guard import run_gates
from asgi_lifespan import LifespanManager
from sqlalchemy import BigInteger, Column, Engine, MetaData, Table, Text, create_engine, text
from sqlalchemy.pool import NullPool

from src.config import Settings
from src.kit.triggers import CACHE_TRIGGERS, CACHED, PLUGIN
from src.migrations import alembic_config
from src.models import Base
from tests.helpers import fresh_database, upgrade, url_string

DISABLE_COUNTRY = f"ALTER TABLE country DISABLE TRIGGER {CACHE_TRIGGERS.trigger_name('country')}"


def proposed(engine: Engine, metadata: MetaData) -> list[tuple]:
    """What autogenerate would write for `metadata`, as its diff tuples."""
    with engine.connect() as conn:
        plugins = ["alembic.autogenerate.*", PLUGIN]  # Alembic's comparators, then ours
        opts = {"target_metadata": metadata, "autogenerate_plugins": plugins}
        context = MigrationContext.configure(conn, opts=opts)
        return produce_migrations(context, metadata).upgrade_ops.as_diffs()


def test_a_new_cached_table_gets_its_trigger_from_the_same_revision(
    settings, sync_engine, monkeypatch
):
    with fresh_database(sync_engine) as url:
        upgrade(settings.for_database(url))
        metadata = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(metadata)
        Table("gadget", metadata, Column("id", BigInteger, primary_key=True), Column("name", Text))
        monkeypatch.setattr("src.kit.triggers.CACHED", CACHED | {"gadget"})
        engine = create_engine(url, poolclass=NullPool)
        try:
            ops = proposed(engine, metadata)
        finally:
            engine.dispose()
    kinds = [op[0] if isinstance(op, tuple) and isinstance(op[0], str) else None for op in ops]
    assert "add_table" in kinds and ("add_notify_trigger", "gadget") in ops, ops
    assert kinds.index("add_table") < ops.index(("add_notify_trigger", "gadget"))


def test_drift_fails_when_a_revision_drops_or_disables_a_trigger(settings: Settings, sync_engine):
    with fresh_database(sync_engine) as url:
        fresh = settings.for_database(url)
        fresh = fresh.model_copy(update={"test_database_url": url_string(url)})
        upgrade(fresh)
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        f"DROP TRIGGER {CACHE_TRIGGERS.trigger_name('subdivision')} ON subdivision"
                    )
                )
                conn.execute(text(DISABLE_COUNTRY))
        finally:
            engine.dispose()
        problems = run_gates("drift", alembic_config(fresh), configured_db=True)
    assert len(problems) == 2, problems
    differ = "drift: the models differ from the migrations"
    assert f"{differ}: modify_notify_trigger country;" in problems[0]
    assert f"{differ}: add_notify_trigger subdivision;" in problems[1]


async def test_the_cache_stays_off_without_a_working_trigger(settings: Settings, sync_engine):
    """Reads stay correct (from the database), and one error line says which table."""
    from src.main import create_app

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]

    with fresh_database(sync_engine) as url:
        upgrade(settings.for_database(url))
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text(DISABLE_COUNTRY))
        engine.dispose()
        app = create_app(settings.for_database(url))
        logging.getLogger("src.kit.cache").addHandler(handler)
        try:
            async with LifespanManager(app):
                for _ in range(100):
                    if app.state.cache.state == "off":
                        break
                    await asyncio.sleep(0.05)
        finally:
            logging.getLogger("src.kit.cache").removeHandler(handler)
    assert app.state.cache.state == "off"
    (line,) = [line for line in lines if "response cache off" in line]
    assert line.startswith("response cache off: no working cache trigger on country ("), line

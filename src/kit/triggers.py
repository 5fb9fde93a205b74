"""The cache's contract with PostgreSQL: every @cached table has a statement-level NOTIFY
trigger (alembic-pg-guard's NotifyTriggers), which autogenerate writes, drift holds, and
the cache checks before it keeps anything."""

from typing import TypeVar

from alembic_pg_guard import NotifyTriggers
from sqlalchemy.orm import DeclarativeBase

M = TypeVar("M", bound=type[DeclarativeBase])
# The tables @cached marks (by name; kept out of Table.info, which revisions would render).
CACHED: set[str] = set()
CACHE_TRIGGERS = NotifyTriggers(
    "api_data_changed", "notify_api_data_changed", lambda: CACHED, suffix="_cache_notify"
)
PLUGIN = CACHE_TRIGGERS.plugin("app.cache_triggers")


def cached(model: M) -> M:
    """Class decorator: reads of this model's table may be cached; autogenerate gives the
    table its NOTIFY trigger."""
    CACHED.add(model.__table__.name)  # type: ignore[attr-defined]
    return model


async def problem(conn, tables: set[str] | frozenset[str]) -> str | None:
    """Why the cache must not keep reads of `tables` (an asyncpg connection), or None."""
    triggers = CACHE_TRIGGERS
    if not triggers.same_body(await conn.fetchval(triggers.function_body_sql())):
        return f"function {triggers.function}() is missing or not the one src/kit declares"
    rows = await conn.fetch(triggers.triggers_sql())
    if missing := sorted(
        set(tables) - {row["table_name"] for row in rows if triggers.working(row)}
    ):
        names = ", ".join(f"{t} ({triggers.trigger_name(t)})" for t in missing)
        return (
            f"no working cache trigger on {names}: migrate, or write the revision "
            "autogenerate proposes (pipenv run alembic-revision)"
        )
    return None

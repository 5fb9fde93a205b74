"""NOTIFY triggers declared in code: each named table gets a statement-level trigger that
calls one function, which NOTIFYs a channel with the table's name at the commit of any
write (the usual way to invalidate application caches). As an Alembic plugin they are
compared through the catalog (no simulation, so a new table and its trigger come from one
autogenerate run, in that order), written into revisions as plain SQL, and seen by drift
when missing or disabled. An application can check them with `triggers_sql`/`working`.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority
from sqlalchemy import text

# AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE, FOR EACH STATEMENT (pg_trigger.tgtype bits).
TRIGGER_TYPE = 4 | 8 | 16 | 32
OPPOSITE = {"add": "remove", "remove": "add", "modify": "modify"}


@dataclass(frozen=True)
class NotifyTriggers:
    """`tables()`: the names of the tables that must have the trigger, asked at each run."""

    channel: str
    function: str
    tables: Callable[[], Iterable[str]] = field(compare=False)
    suffix: str = "_notify"

    @property
    def body(self) -> str:
        notify = f"PERFORM pg_catalog.pg_notify('{self.channel}', TG_TABLE_NAME)"
        return f"BEGIN {notify}; RETURN NULL; END"

    def trigger_name(self, table: str) -> str:
        return f"{table}{self.suffix}"

    def function_sql(self, body: str | None = None) -> str:
        return (
            f"CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ {body or self.body} $$"
        )

    def create_trigger_sql(self, table: str) -> str:
        return (
            f"CREATE OR REPLACE TRIGGER {self.trigger_name(table)} AFTER INSERT OR UPDATE OR "
            f"DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {self.function}()"
        )

    def drop_trigger_sql(self, table: str) -> str:
        return f"DROP TRIGGER IF EXISTS {self.trigger_name(table)} ON {table}"

    def triggers_sql(self) -> str:
        """The triggers as they are (table_name, name, enabled, type, function, definition)."""
        suffix = self.suffix.replace("_", "\\_")
        return (
            "SELECT c.relname AS table_name, t.tgname AS name, "
            "t.tgenabled IN ('O', 'A') AS enabled, t.tgtype AS type, p.proname AS function, "
            "pg_get_triggerdef(t.oid) AS definition FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT t.tgisinternal "
            f"AND n.nspname = current_schema() AND t.tgname LIKE '%{suffix}'"
        )

    def function_body_sql(self) -> str:
        """The function's body as it is (no row: there is none)."""
        return (
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE p.proname = '{self.function}' AND n.nspname = current_schema()"
        )

    def same_body(self, found: str | None) -> bool:
        return found is not None and " ".join(found.split()) == " ".join(self.body.split())

    def working(self, row: Any) -> bool:
        """A row of triggers_sql(): enabled, AFTER each statement of every write, ours."""
        return row["enabled"] and row["type"] == TRIGGER_TYPE and row["function"] == self.function

    def plugin(self, name: str) -> str:
        """Register the Alembic plugin `name` comparing these triggers (once); its name,
        for `run_env(..., plugins=[...])`."""
        if name not in _REGISTERED:
            _REGISTERED[name] = self
            Plugin.setup_plugin_from_module(sys.modules[__name__], name)
        return name

    def compare(self, context: AutogenContext, upgrade_ops: ops.UpgradeOps) -> None:
        conn, metadata = context.connection, context.metadata
        if conn is None or metadata is None:
            return
        known = {t.name for t in metadata.tables.values()}  # type: ignore[union-attr]
        wanted = sorted(set(self.tables()) & known)
        body = conn.execute(text(self.function_body_sql())).scalar()
        steps: list[TriggerSQL] = []
        if wanted and not self.same_body(body):
            kind, undo = "add_notify_function", f"DROP FUNCTION IF EXISTS {self.function}()"
            if body is not None:
                kind, undo = "modify_notify_function", self.function_sql(body)
            steps.append(TriggerSQL(kind, self.function, (self.function_sql(),), (undo,)))
        rows = {r.table_name: r for r in conn.execute(text(self.triggers_sql())).mappings()}
        for table in wanted:
            row, create = rows.get(table), self.create_trigger_sql(table)
            if row is None:
                drop = self.drop_trigger_sql(table)
                steps.append(TriggerSQL("add_notify_trigger", table, (create,), (drop,)))
            elif not self.working(row):
                name, undo = row["name"], [_or_replace(row["definition"])]
                if not row["enabled"]:
                    undo.append(f"ALTER TABLE {table} DISABLE TRIGGER {name}")
                sql = (create, f"ALTER TABLE {table} ENABLE TRIGGER {name}")
                steps.append(TriggerSQL("modify_notify_trigger", table, sql, tuple(undo)))
        for table, row in sorted(rows.items()):
            if table not in wanted and row["name"] == self.trigger_name(table):
                drop, undo = self.drop_trigger_sql(table), _or_replace(row["definition"])
                steps.append(TriggerSQL("remove_notify_trigger", table, (drop,), (undo,)))
        upgrade_ops.ops.extend(steps)


_REGISTERED: dict[str, NotifyTriggers] = {}


def _or_replace(definition: str) -> str:
    return definition.replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", 1)


@dataclass
class TriggerSQL(ops.MigrateOperation):
    """One step, as the statements it runs and those that undo it."""

    kind: str  # add_notify_trigger, remove_notify_trigger, modify_notify_function, ...
    target: str  # the table (or the function)
    sql: tuple[str, ...]
    undo: tuple[str, ...]

    def reverse(self) -> TriggerSQL:
        verb, _, rest = self.kind.partition("_")
        return TriggerSQL(f"{OPPOSITE[verb]}_{rest}", self.target, self.undo, self.sql)

    def to_diff_tuple(self) -> tuple[str, str]:
        return (self.kind, self.target)


@renderers.dispatch_for(TriggerSQL)
def _render(context: AutogenContext, op: TriggerSQL) -> str:
    """op.execute() of each statement, split into short literals (lines stay under 100)."""
    prefix = context.opts.get("alembic_module_prefix", "op.")
    calls = []
    for statement in op.sql:
        parts = textwrap.wrap(statement, 72, drop_whitespace=False, break_on_hyphens=False)
        calls.append(f"{prefix}execute(\n" + "".join(f"    {p!r}\n" for p in parts) + ")")
    return "\n".join(calls)


def setup(plugin: Plugin) -> None:
    """Alembic's plugin hook: the triggers registered under this plugin's name, run last
    (after the tables they need are created)."""
    triggers = _REGISTERED[plugin.name]

    def compare(context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Iterable) -> None:
        triggers.compare(context, upgrade_ops)

    plugin.add_autogenerate_comparator(compare, "schema", priority=DispatchPriority.LAST)

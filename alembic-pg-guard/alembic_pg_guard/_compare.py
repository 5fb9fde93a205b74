"""What Alembic's autogenerate does not compare on PostgreSQL, as an Alembic plugin.

A column's collation when only one side names one (Alembic, by design, ignores a "less
specific" side), and an index's access method, partial-index WHERE, INCLUDE columns and
operator classes (Alembic compares only its columns and expressions). A changed collation
becomes an alter_column with the new type; a changed index is dropped and created again.
Both sides are normalized so that an unchanged model yields no diff.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import Column, Connection, Index, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ClauseElement, TextClause

PLUGIN = "alembic_pg_guard.compare"
DEFAULT_METHOD = "btree"
# A "::type" cast as PostgreSQL deparses it (the models rarely write them).
CAST = re.compile(
    r"::\s*(?:\"[^\"]+\"|\w+)(?:\.(?:\"[^\"]+\"|\w+))?(?:\s+(?:varying|precision))?"
    r"(?:\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\s+with(?:out)?\s+time\s+zone)?(?:\s*\[\s*\d*\s*\])*",
    re.I,
)
LITERAL = re.compile(r"('(?:[^']|'')*')")
PROBE = "alembic_pg_guard_probe"
Change = tuple[str, str, str]  # what, before, after: ("using", "gin", "gist")


# --- collation -------------------------------------------------------------------------


def collation(column: Column) -> tuple[str | None, str | None]:
    """(schema, name) of the column's collation; the database default is (None, None)."""
    name = getattr(column.type, "collation", None)
    if name in (None, "default"):
        return None, None
    return getattr(column.type, "collation_schema", None), name


def _compare_collation(
    context: AutogenContext,
    alter: ops.AlterColumnOp,
    schema: str | None,
    table: str,
    name: str,
    conn_col: Column,
    metadata_col: Column,
) -> PriorityDispatchResult:
    """Runs after Alembic's type comparison (same subgroup): only when it saw no change."""
    types = (conn_col.type, metadata_col.type)
    if alter.modify_type is not None or not all(hasattr(t, "collation") for t in types):
        return PriorityDispatchResult.CONTINUE
    if collation(conn_col) != collation(metadata_col):
        alter.existing_type = conn_col.type  # the downgrade's type, its collation included
        alter.modify_type = metadata_col.type
    return PriorityDispatchResult.CONTINUE


# --- indexes ---------------------------------------------------------------------------


def sql_key(sql: str) -> str:
    """SQL as comparable text: no casts, parentheses, double quotes or spaces, and lower
    case outside string literals (PostgreSQL deparses with all of those, models without)."""
    parts = LITERAL.split(CAST.sub("", sql))
    return "".join(
        part if part.startswith("'") else re.sub(r"[\s()\"]", "", part.lower()) for part in parts
    )


def compiled(element: ClauseElement | str, connection: Connection) -> str:
    if isinstance(element, str):
        return element
    kwargs = {"literal_binds": True, "include_table": False}
    return element.compile(dialect=connection.dialect, compile_kwargs=kwargs).string


def canonical_where(
    connection: Connection, table: Table, where: str, schema: str | None
) -> str | None:
    """The WHERE as PostgreSQL deparses it, from an index on an empty temporary copy of
    the table, rolled back; None if that cannot be done here (a read-only database)."""
    quote = connection.dialect.identifier_preparer.quote
    source = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(f"CREATE TEMP TABLE {PROBE} (LIKE {source})")
        connection.exec_driver_sql(f"CREATE INDEX ON {PROBE} ((true)) WHERE {where}")
        found = connection.execute(
            text(
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                f"WHERE indrelid = 'pg_temp.{PROBE}'::regclass"
            )
        ).scalar()
    except DBAPIError:
        found = None
    finally:
        savepoint.rollback()
    return found


def element_names(index: Index) -> list[str | None]:
    """Each element's key in postgresql_ops: a column's name, a label's, a reflected
    expression's text."""
    names: list[str | None] = []
    for element in index.expressions:
        if isinstance(element, TextClause):
            names.append(element.text)
        else:
            names.append(getattr(element, "key", None))
    return names


def default_opclasses(connection: Connection, method: str, names: Iterable[str]) -> set[str]:
    """Those of `names` that are their access method's default for some type (reflection
    leaves a default one out, a model may spell it)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    rows = connection.execute(
        text(
            "SELECT o.opcname FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod "
            "WHERE o.opcdefault AND a.amname = :method AND o.opcname = ANY(:names)"
        ),
        {"method": method, "names": wanted},
    )
    return {row[0] for row in rows}


def index_options(index: Index) -> dict[str, Any]:
    """Its postgresql_* options (using, where, include, ops, ...), defaults included."""
    return dict(index.dialect_options["postgresql"])


def opclasses(index: Index, connection: Connection, method: str) -> list[str | None]:
    given: dict[str, str] = index_options(index).get("ops") or {}
    defaults = default_opclasses(connection, method, given.values())
    found = [given.get(name) if name is not None else None for name in element_names(index)]
    return [None if name in defaults else name for name in found]


def include_names(index: Index) -> list[str]:
    given: Sequence[Any] = index_options(index).get("include") or ()
    return [getattr(item, "name", item) for item in given]


def where_sql(index: Index, connection: Connection) -> str | None:
    where = index_options(index).get("where")
    return None if where is None else compiled(where, connection)


def where_changed(
    connection: Connection, table: Table, schema: str | None, old: str | None, new: str | None
) -> bool:
    """Compared as text first; only when that differs, as PostgreSQL deparses the model's."""
    if old is None or new is None:
        return old != new
    if sql_key(old) == sql_key(new):
        return False
    return sql_key(old) != sql_key(canonical_where(connection, table, new, schema) or "")


def index_changes(
    context: AutogenContext, conn: Index, model: Index, table: Table, schema: str | None
) -> list[Change]:
    """What differs beyond Alembic's comparison, e.g. [("using", "gin", "gist")]."""
    connection = context.connection
    assert connection is not None
    found, wanted = index_options(conn), index_options(model)
    changes: list[Change] = []
    old_method = (found.get("using") or DEFAULT_METHOD).lower()
    new_method = (wanted.get("using") or DEFAULT_METHOD).lower()
    if old_method != new_method:
        changes.append(("using", old_method, new_method))
    old_where, new_where = (where_sql(ix, connection) for ix in (conn, model))
    if where_changed(connection, table, schema, old_where, new_where):
        changes.append(("where", old_where or "(none)", new_where or "(none)"))
    old_include, new_include = include_names(conn), include_names(model)
    if old_include != new_include:
        changes.append(("include", f"({', '.join(old_include)})", f"({', '.join(new_include)})"))
    old_ops, new_ops = (
        opclasses(conn, connection, old_method),
        opclasses(model, connection, new_method),
    )
    if old_ops != new_ops and old_method == new_method:
        shown = [", ".join(o or "default" for o in ops_) for ops_ in (old_ops, new_ops)]
        changes.append(("ops", f"({shown[0]})", f"({shown[1]})"))
    return changes


def as_created(conn: Index, table: Table) -> Index:
    """The reflected index as an Index that recreates it (the downgrade's): its WHERE as
    SQL, an expression's operator class inside the expression (Alembic renders it as text,
    which postgresql_ops cannot name)."""
    options = index_options(conn)
    ops_by_name: dict[str, str] = dict(options.get("ops") or {})
    elements: list[Any] = []
    for element in conn.expressions:
        if isinstance(element, TextClause):
            opclass = ops_by_name.pop(element.text, None)
            elements.append(text(f"{element.text} {opclass}") if opclass else element)
        else:
            elements.append(element)
    kwargs: dict[str, Any] = {}
    if options.get("using"):
        kwargs["postgresql_using"] = options["using"]
    if options.get("where") is not None:
        kwargs["postgresql_where"] = text(str(options["where"]))
    if options.get("include"):
        kwargs["postgresql_include"] = list(options["include"])
    if ops_by_name:
        kwargs["postgresql_ops"] = ops_by_name
    for key in ("with", "nulls_not_distinct", "tablespace"):
        if options.get(key):
            kwargs[f"postgresql_{key}"] = options[key]
    return Index(conn.name, *elements, unique=conn.unique, _table=table, **kwargs)


class ChangeIndexOp(ops.MigrateOperation):
    """A changed index: Alembic's drop_index then create_index, rendered as Alembic
    renders them; one diff ("modify_index") that says what changed."""

    def __init__(self, drop: ops.DropIndexOp, create: ops.CreateIndexOp, changes: list[Change]):
        self.drop, self.create, self.changes = drop, create, changes

    def reverse(self) -> ChangeIndexOp:
        undone = [(what, after, before) for what, before, after in self.changes]
        return ChangeIndexOp(self.create.reverse(), self.drop.reverse(), undone)

    def to_diff_tuple(self) -> tuple[str, Index, str]:
        said = "; ".join(f"{what} {before} -> {after}" for what, before, after in self.changes)
        return ("modify_index", self.create.to_index(), said)


@renderers.dispatch_for(ChangeIndexOp)
def _render_change(context: AutogenContext, op: ChangeIndexOp) -> str:
    return "\n".join(renderers.dispatch(step)(context, step) for step in (op.drop, op.create))


def _compare_indexes(
    context: AutogenContext,
    modify_ops: ops.ModifyTableOps,
    schema: str | None,
    table: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    """After Alembic's own index comparison: the indexes on both sides it left alone."""
    if conn_table is None or metadata_table is None or context.connection is None:
        return PriorityDispatchResult.CONTINUE
    changed = {str(op.index_name) for op in modify_ops.ops if isinstance(op, ops.DropIndexOp)}
    found = {str(ix.name): ix for ix in conn_table.indexes if ix.name is not None}
    for model in sorted(metadata_table.indexes, key=lambda ix: str(ix.name)):
        name = str(model.name)
        conn = found.get(name)
        if conn is None or name in changed:
            continue
        if not context.run_object_filters(model, name, "index", False, conn):
            continue
        changes = index_changes(context, conn, model, metadata_table, schema)
        if changes:
            drop = ops.DropIndexOp.from_index(as_created(conn, conn_table))
            modify_ops.ops.append(ChangeIndexOp(drop, ops.CreateIndexOp.from_index(model), changes))
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    """Alembic's plugin hook: each comparison after Alembic's own of the same thing."""
    plugin.add_autogenerate_comparator(
        _compare_collation, "column", "types", priority=DispatchPriority.LAST
    )
    plugin.add_autogenerate_comparator(
        _compare_indexes, "table", "guard_indexes", priority=DispatchPriority.LAST
    )


Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN)

"""What autogenerate compares and what it refuses to write (`run_env` wires it in).

Compares, beyond Alembic's defaults: PostgreSQL enum types and their values
(alembic-postgresql-enum) and named CHECK constraints (Alembic's opt-in plugin; every
constraint should be named by the models' naming convention, or it compares by name only).
Also collations and index methods, partial-index WHERE, INCLUDE and operator classes
(the guard's own plugin, _compare).

Refuses: a drop + add that looks like a rename (of a column, or of a table with the same
columns), which would lose the data, unless allowed. Skips an empty revision. Guards an
enum value removal so that it fails, naming the rows' table, while rows still use it.
"""

import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import alembic_postgresql_enum  # noqa: F401  (registers its comparator and enum operations)
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from alembic_postgresql_enum.operations.sync_enum_values import SyncEnumValuesOp

from alembic_pg_guard._compare import PLUGIN as COMPARE
from alembic_pg_guard._settings import Hints

# Alembic's default comparators, the opt-in CHECK constraint one, and the guard's
# (collations, index methods, WHERE, INCLUDE, operator classes: _compare).
AUTOGENERATE_PLUGINS = ["alembic.autogenerate.*", "alembic.ext.checkconstraint_byname", COMPARE]
NOTHING_TO_DO = "No schema changes detected: no revision written."


@dataclass(frozen=True)
class Rename:
    """A drop + add that may be a rename: of `table` itself (old is the table), or of a column."""

    table: str
    old: str
    new: str | None  # None: several columns dropped and added, no pairing to suggest
    added: tuple[str, ...] = ()
    is_table: bool = False

    def describe(self) -> str:
        if self.is_table:
            return f"drops table {self.old!r} and creates {self.new!r} with the same columns"
        if self.new is None:
            return f"on {self.table!r} drops column(s) {self.old} and adds {', '.join(self.added)}"
        return f"on {self.table!r} drops column {self.old!r} and adds {self.new!r}"

    def in_place(self) -> str:
        if self.is_table:
            return (
                f"op.rename_table({self.old!r}, {self.new!r}), then rename its indexes and "
                "constraints (ALTER INDEX ... RENAME TO ...) until check-drift is clean"
            )
        new = self.new or "<new>"
        return f"op.alter_column({self.table!r}, {self.old!r}, new_column_name={new!r})"

    def expand_contract(self) -> str:
        if self.is_table:
            return (
                f"create {self.new!r}, write to both and copy the rows over, move the code to "
                f"{self.new!r}, then drop {self.old!r} in a later release"
            )
        new = self.new or "<new>"
        return (
            f"add {self.table}.{new}, write to both and backfill it from {self.old!r}, move "
            f"the code to {new!r}, then drop {self.old!r} in a later release"
        )


def column_renames(upgrade_ops: ops.UpgradeOps) -> Iterator[Rename]:
    for table_ops in upgrade_ops.ops:
        if not isinstance(table_ops, ops.ModifyTableOps):
            continue
        dropped = [op.column_name for op in table_ops.ops if isinstance(op, ops.DropColumnOp)]
        added = [op.column.name for op in table_ops.ops if isinstance(op, ops.AddColumnOp)]
        if not (dropped and added):
            continue
        if len(dropped) == len(added) == 1:
            yield Rename(table_ops.table_name, dropped[0], added[0])
        else:
            yield Rename(table_ops.table_name, ", ".join(dropped), None, tuple(added))


def table_columns(op: ops.CreateTableOp | ops.DropTableOp) -> frozenset[str]:
    return frozenset(column.name for column in op.to_table().columns)


def table_renames(upgrade_ops: ops.UpgradeOps) -> Iterator[Rename]:
    """A dropped table and a created one with the same column names: a __tablename__ change."""
    created = [op for op in upgrade_ops.ops if isinstance(op, ops.CreateTableOp)]
    for drop in (op for op in upgrade_ops.ops if isinstance(op, ops.DropTableOp)):
        columns = table_columns(drop)
        for create in created:
            if columns and table_columns(create) == columns:
                created.remove(create)
                yield Rename(drop.table_name, drop.table_name, create.table_name, is_table=True)
                break


def suspected_renames(upgrade_ops: ops.UpgradeOps) -> list[Rename]:
    return [*table_renames(upgrade_ops), *column_renames(upgrade_ops)]


def refusal(renames: list[Rename], hints: Hints) -> str:
    """The guard's one message: what it saw, the in-place rename, the live-system path."""
    return (
        "refusing to write a revision that drops and adds what looks like a rename, "
        f"which would lose the data: {'; '.join(r.describe() for r in renames)}. "
        f"To rename in place, write an empty revision ({hints.alembic} revision -m '...') with: "
        f"{'; '.join(r.in_place() for r in renames)}. "
        "While old code still runs against the database (a rolling deploy), expand/contract "
        f"instead: {'; '.join(r.expand_contract() for r in renames)} ({hints.docs}). "
        f"If you really mean drop + add, rerun with {hints.allow_drop_add}."
    )


class RefuseEnumValuesInUse(ops.MigrateOperation):
    """Before a sync_enum_values that drops values: fail, naming the rows, while rows use them
    (the library would fail too, but without saying where)."""

    def __init__(self, sync: SyncEnumValuesOp, removed: list[str]):
        self.sync, self.removed = sync, removed

    def reverse(self) -> ops.MigrateOperation:  # only ever placed after reversal
        raise NotImplementedError


def refuse_in_use_sql(table: str, column: str, enum: str, removed: list[str]) -> str:
    """A DO block that raises, naming the column, while any row of it has a removed value."""
    in_list = ", ".join(f"'{value}'" for value in removed)
    quoted = in_list.replace("'", "''")  # inside RAISE's string literal
    return (
        f'DO $$ BEGIN IF EXISTS (SELECT FROM "{table}" WHERE "{column}"::text IN ({in_list})) '
        f"THEN RAISE EXCEPTION 'cannot remove {quoted} from enum {enum}: rows of {table}.{column} "
        "still use it; update or delete those rows first, or map them to another value with "
        "enum_values_to_rename in this revision'; END IF; END $$"
    )


@renderers.dispatch_for(RefuseEnumValuesInUse)
def _render_refusal(autogen_context: AutogenContext, op: RefuseEnumValuesInUse) -> str:
    """op.execute(...) of the DO block, split into short literals (lines stay under 100)."""
    prefix = autogen_context.opts.get("alembic_module_prefix", "op.")
    calls = []
    for ref in op.sync.affected_columns:
        sql = refuse_in_use_sql(ref.table_name, ref.column_name, op.sync.name, op.removed)
        parts = textwrap.wrap(sql, 72, drop_whitespace=False, break_on_hyphens=False)
        calls.append(f"{prefix}execute(\n" + "".join(f"    {p!r}\n" for p in parts) + ")")
    return "\n".join(calls) or "pass  # no column uses the enum values removed below"


def guard_enum_removals(container: ops.OpContainer) -> None:
    """Put a RefuseEnumValuesInUse before each sync_enum_values that drops values."""
    guarded: list[ops.MigrateOperation] = []
    for op in container.ops:
        if isinstance(op, SyncEnumValuesOp):
            removed = [value for value in op.old_values if value not in op.new_values]
            if removed:
                guarded.append(RefuseEnumValuesInUse(op, removed))
        guarded.append(op)
    container.ops[:] = guarded


def autogenerating_revision(context: MigrationContext) -> bool:
    """True for `alembic revision --autogenerate` however invoked (CLI or command.revision).

    Alembic calls this hook only when autogenerate is on (alembic.ini sets no
    revision_environment), for `revision` and for `check`; `check` must see the raw diffs.
    On the command line cmd_opts names the command; from Python, the function Alembic ran.
    """
    cmd_opts = context.config.cmd_opts if context.config is not None else None
    if cmd_opts is not None and getattr(cmd_opts, "cmd", None):
        return cmd_opts.cmd[0].__name__ == "revision" and getattr(cmd_opts, "autogenerate", False)
    fn: Callable | None = context.opts.get("fn")
    return fn is not None and fn.__qualname__.partition(".")[0] == "revision"


def process_revision_directives(
    context: MigrationContext,
    revision: object,
    directives: list,
    *,
    allow_drop_add: bool,
    hints: Hints,
) -> None:
    if not autogenerating_revision(context):
        return
    script: ops.MigrationScript = directives[0]
    if all(upgrade_ops.is_empty() for upgrade_ops in script.upgrade_ops_list):
        directives[:] = []
        print(NOTHING_TO_DO)
        return
    renames = [r for ops_ in script.upgrade_ops_list for r in suspected_renames(ops_)]
    if renames and not allow_drop_add:
        if context.config is not None and context.config.cmd_opts is not None:
            # The CLI would print a CommandError twice (logged, then "FAILED:"): once, exit 1.
            sys.exit(f"error: {refusal(renames, hints)}")
        raise CommandError(refusal(renames, hints))
    for container in [*script.upgrade_ops_list, *script.downgrade_ops_list]:
        guard_enum_removals(container)

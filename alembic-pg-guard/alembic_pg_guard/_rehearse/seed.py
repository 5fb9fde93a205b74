"""Synthetic rows at scale, generated inside PostgreSQL from the schema as reflected.

One `INSERT ... SELECT ... FROM generate_series()` per table, so a million rows never
cross the wire. Values follow each column's reflected type; unique columns get distinct
values (their capacity caps the row count); foreign keys point at random existing parent
rows; columns with a server default or identity keep it; unique 2- and 3-letter codes are
real ISO 3166-1 codes. Rows land in random physical order and other strings are sampled
from the table's existing values (else random letters of random length): values that
follow the row order make index builds and scans look far cheaper than on a real table.
docs/rehearse.md explains the choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import pycountry
from sqlalchemy import Column, Connection, Engine, Enum, MetaData, Table, text
from sqlalchemy import types as sqltypes

from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._history import TABLE as HISTORY_TABLE

# The runner's bookkeeping (alembic_version, the history table): never seeded.
VERSION_TABLES = frozenset({"alembic_version", HISTORY_TABLE})
# Tables that others reference get this many times fewer rows than the largest one.
PARENT_RATIO = 1000
# Unique values use letters only (codes such as alpha-2 are letters); at most half of a
# unique column's capacity (of the ISO codes, for 2 or 3 characters) is used, leaving room
# for the rows that clients create.
ALPHABET = 26
FILL_SHARE = 0.5
# Widest base-26 code we build digit by digit (26**13 > 2**61 rows: never reached).
MAX_CODE_WIDTH = 13
# Other strings: sampled from up to this many existing values, else random letters of
# 4 to MAX_RANDOM_LENGTH characters.
SAMPLE_VALUES = 100_000
MAX_RANDOM_LENGTH = 30


# Unique columns of exactly 2 or 3 characters hold ISO codes in real databases (countries,
# here), and data steps keyed on them (backfills from pycountry) only find real ones. Both
# lists follow one country order, so row g gets one country's alpha-2 and alpha-3.
ISO_COUNTRIES = sorted(pycountry.countries, key=lambda c: c.alpha_2)
ISO_CODES = {
    2: [c.alpha_2 for c in ISO_COUNTRIES],
    3: [c.alpha_3 for c in ISO_COUNTRIES],
}


class SeedError(GuardError):
    """A schema the generator cannot fill: one line naming the table and column."""


@dataclass
class TablePlan:
    """How many rows one table gets, and the SQL that makes them."""

    table: str
    rows: int
    sql: str


def reflect(conn: Connection) -> MetaData:
    """The public schema as it is now (the revision being rehearsed), without Alembic's table."""
    metadata = MetaData()
    metadata.reflect(conn, schema=None)
    for name in VERSION_TABLES & set(metadata.tables):
        metadata.remove(metadata.tables[name])
    return metadata


def referenced_elsewhere(metadata: MetaData) -> set[str]:
    """Tables that another table's foreign key points at (self-references aside)."""
    return {
        fk.column.table.name
        for table in metadata.tables.values()
        for fk in table.foreign_keys
        if fk.column.table is not table
    }


def unique_columns(table: Table) -> set[str]:
    """Columns in a primary key or unique constraint/index: their values must be distinct."""
    names: set[str] = set(table.primary_key.columns.keys())
    for constraint in table.constraints:
        if constraint.__class__.__name__ == "UniqueConstraint":
            names.update(constraint.columns.keys())  # type: ignore[attr-defined]
    for index in table.indexes:
        if index.unique:
            names.update(c.name for c in index.columns)
    return names


def generated_by_server(column: Column) -> bool:
    """Identity, serial or a server default: PostgreSQL fills it when the INSERT omits it."""
    return column.identity is not None or column.server_default is not None


def code_expr(width: int) -> str:
    """A distinct upper-case code of `width` letters for each g = 1, 2, ... (base 26)."""
    digits = [
        f"chr((65 + ((g - 1) / {ALPHABET**k}) % {ALPHABET})::int)"
        for k in reversed(range(min(width, MAX_CODE_WIDTH)))
    ]
    return " || ".join(digits)


def string_length(column: Column) -> int | None:
    return getattr(column.type, "length", None)


def iso_codes(column: Column) -> list[str] | None:
    """The ISO codes a unique string column of exactly 2 or 3 characters is filled from."""
    if isinstance(column.type, sqltypes.String) and not isinstance(column.type, Enum):
        return ISO_CODES.get(string_length(column) or 0)
    return None


def capacity(column: Column) -> float:
    """How many distinct values this generator can give the (unique) column."""
    codes = iso_codes(column)
    if codes is not None:
        return len(codes)
    if isinstance(column.type, sqltypes.String) and not isinstance(column.type, Enum):
        length = string_length(column)
        return ALPHABET ** min(length, MAX_CODE_WIDTH) if length else math.inf
    if isinstance(column.type, sqltypes.SmallInteger):
        return 32_767
    if isinstance(column.type, sqltypes.Boolean):
        return 2
    if isinstance(column.type, Enum):
        return len(column.type.enums)
    return math.inf


def random_letters(width: int) -> str:
    """Letters of a random length up to `width` (hex digits mapped to common letters)."""
    top = min(width, MAX_RANDOM_LENGTH)
    low = min(4, top)
    letters = "translate(md5(random()::text) || md5(random()::text), '0123456789abcdef', "
    letters += "'etaoinshrdlucmfw')"
    return f"left(initcap({letters}), {low} + floor(random() * {top - low + 1})::int)"


def value_expr(column: Column, unique: bool) -> str | None:
    """The SQL value of `column` for series row g; None when no value can be made."""
    type_ = column.type
    if isinstance(type_, Enum):
        labels = ", ".join(f"'{label}'" for label in type_.enums)
        return f"(ARRAY[{labels}]::{type_.name}[])[1 + (g % {len(type_.enums)})]"
    codes = iso_codes(column) if unique else None
    if codes is not None:  # capacity() keeps g within the list
        quoted = ", ".join(f"'{code}'" for code in codes)
        return f"(ARRAY[{quoted}])[g]"
    if isinstance(type_, sqltypes.String):  # VARCHAR, CHAR, TEXT
        width = string_length(column) or MAX_RANDOM_LENGTH
        return code_expr(width) if unique else random_letters(width)
    if isinstance(type_, sqltypes.Boolean):
        return "(g % 2 = 0)"
    if isinstance(type_, sqltypes.SmallInteger):
        return "(g % 32767)::smallint"
    if isinstance(type_, (sqltypes.Integer, sqltypes.BigInteger)):
        return "g" if unique else "floor(random() * 1000)::int"
    if isinstance(type_, (sqltypes.Numeric, sqltypes.Float)):
        return "floor(random() * 1000) + 0.5"
    if isinstance(type_, sqltypes.DateTime):
        return "now() - make_interval(secs => g)"
    if isinstance(type_, sqltypes.Date):
        return "current_date - (g % 3650)::int"
    if isinstance(type_, sqltypes.Uuid):
        return "gen_random_uuid()"
    if isinstance(type_, sqltypes.JSON):
        return "'{}'"
    return None


def sampled(column: Column, unique: bool) -> bool:
    """Non-unique strings take the table's own values when it has some: real lengths and
    a real distribution (a name column holds names, not codes)."""
    type_ = column.type
    return not unique and isinstance(type_, sqltypes.String) and not isinstance(type_, Enum)


def fk_target(column: Column) -> tuple[str, str] | None:
    """(parent table, parent column) of a single-column foreign key on `column`."""
    for fk in column.foreign_keys:
        if len(fk.constraint.elements) == 1:  # type: ignore[union-attr]
            return fk.column.table.name, fk.column.name
    return None


def plan_table(table: Table, rows: int, parents_filled: Callable[[str], bool]) -> TablePlan:
    """The INSERT ... SELECT for `rows` synthetic rows of `table`."""
    uniques = unique_columns(table)
    columns, values, ctes = [], [], []
    samples: list[str] = []  # aliases of sampled columns' value lists, joined by number
    for column in table.columns:
        if generated_by_server(column):
            continue
        target = fk_target(column)
        if target is not None:
            parent, parent_column = target
            if parent == table.name or not parents_filled(parent):
                if column.nullable:
                    continue  # NULL: a self-reference, or a parent with no rows
                raise SeedError(
                    f"cannot fill {table.name}.{column.name}: it must reference {parent}, "
                    "which has no rows"
                )
            alias = f"p_{len(ctes)}"
            ctes.append(
                f'{alias} AS (SELECT array_agg("{parent_column}" ORDER BY "{parent_column}") '
                f'AS ids, count(*) AS n FROM "{parent}")'
            )
            columns.append(column.name)
            values.append(f"{alias}.ids[1 + floor(random() * {alias}.n)::int]")
            continue
        expr = value_expr(column, column.name in uniques)
        if expr is not None and sampled(column, column.name in uniques):
            # A join on a random row number: subscripting a big text array costs O(n).
            alias = f"s_{len(samples)}"
            samples.append(alias)
            ctes.append(
                f'{alias} AS (SELECT (row_number() OVER ())::int AS i, "{column.name}" AS v '
                f'FROM (SELECT "{column.name}" FROM "{table.name}" WHERE "{column.name}" IS NOT '
                f"NULL LIMIT {SAMPLE_VALUES}) AS x)"
            )
            expr = f"coalesce({alias}.v, {expr})"
        if expr is None:
            if column.nullable:
                continue
            raise SeedError(
                f"cannot fill {table.name}.{column.name}: no generator for type {column.type} "
                "(give it a server default, or make it nullable)"
            )
        columns.append(column.name)
        values.append(expr)
    if not columns:
        sql = f'INSERT INTO "{table.name}" SELECT FROM generate_series(1, {rows}) AS g'
        return TablePlan(table.name, rows, sql)
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    # Rows in random physical order: the series is shuffled alone (not rows carrying arrays).
    picks = "".join(
        f", 1 + floor(random() * (SELECT count(*) FROM {a}))::int AS k_{a}" for a in samples
    )
    sources = (
        f"(SELECT g{picks} FROM generate_series(1, {rows}) AS g ORDER BY random()) AS shuffled"
    )
    sources += "".join(f" LEFT JOIN {a} ON {a}.i = shuffled.k_{a}" for a in samples)
    sources += "".join(f" CROSS JOIN {c.split()[0]}" for c in ctes if c.startswith("p_"))
    quoted = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f'{with_clause}INSERT INTO "{table.name}" ({quoted}) '
        f"SELECT {', '.join(values)} FROM {sources} ON CONFLICT DO NOTHING"
    )
    return TablePlan(table.name, rows, sql)


def target_rows(table: Table, largest: int, parents: set[str]) -> int:
    """`largest` for tables nobody references, fewer for the ones others point at; at most
    FILL_SHARE of what the table's most constrained unique column can hold."""
    wanted = largest if table.name not in parents else max(1, largest // PARENT_RATIO)
    uniques = unique_columns(table)
    limits = [
        capacity(c) for c in table.columns if c.name in uniques and not generated_by_server(c)
    ]
    limit = min(limits, default=math.inf)
    return int(max(1, min(wanted, limit * FILL_SHARE)))


def fill_order(metadata: MetaData, names: set[str]) -> list[Table]:
    """`names`' tables, parents before children (SQLAlchemy sorts by foreign key)."""
    return [t for t in metadata.sorted_tables if t.name in names]


def fill(
    engine: Engine,
    largest: int,
    only: set[str] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Fill the tables (`only` these, if given) and return rows added per table.

    Foreign-key triggers are skipped (session_replication_role = replica, the bulk-load
    setting; the values reference existing rows by construction), then each table is
    VACUUM ANALYZEd so plans and visibility look like a live database's.
    """
    with engine.connect() as conn:
        return _fill(conn, largest, only, progress)


def _fill(
    conn: Connection,
    largest: int,
    only: set[str] | None,
    progress: Callable[[str, int], None] | None,
) -> dict[str, int]:
    metadata = reflect(conn)
    names = set(metadata.tables) if only is None else only & set(metadata.tables)
    parents = referenced_elsewhere(metadata)
    added: dict[str, int] = {}

    def has_rows(name: str) -> bool:
        return bool(conn.scalar(text(f'SELECT EXISTS (SELECT FROM "{name}")')))

    conn.exec_driver_sql("SET session_replication_role = replica")
    conn.exec_driver_sql("SET work_mem = '256MB'")  # the ORDER BY random() of a million rows
    try:
        for table in fill_order(metadata, names):
            rows = target_rows(table, largest, parents)
            if progress:
                progress(table.name, rows)
            plan = plan_table(table, rows, has_rows)
            added[table.name] = run_sql(conn, plan.sql)
            conn.commit()
    finally:
        conn.rollback()
        conn.exec_driver_sql("RESET session_replication_role")
        conn.exec_driver_sql("RESET work_mem")
        conn.commit()
    conn.execution_options(isolation_level="AUTOCOMMIT")
    for name in added:
        conn.exec_driver_sql(f'VACUUM ANALYZE "{name}"')
    return added


def run_sql(conn: Connection, sql: str) -> int:
    """Run literal SQL (its `%` signs are operators, not placeholders); rows affected."""
    with conn.connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.rowcount


def table_names_at(dsn: str) -> set[str]:
    """The public tables of the database at `dsn` now."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {name for (name,) in cursor.fetchall()} - VERSION_TABLES
    finally:
        conn.close()

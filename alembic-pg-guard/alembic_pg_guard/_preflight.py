"""Before a revision's statement that existing rows can break: count those rows, refuse.

A narrowing type change (`varchar(200)` -> `varchar(50)`, with or without a `USING` cast)
truncates or rounds rows silently or fails in production only; a CHECK, NOT NULL, UNIQUE,
PRIMARY KEY, unique index or validated constraint fails on rows the gates never saw. The
runner measures the live rows first, in the revision's own transaction, and refuses with
the count and one example key before the statement runs. Statements it cannot parse are
left to PostgreSQL, and so is a measurement that fails (its error would be the statement's).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._preflight_sql import (
    CANDIDATE,
    Action,
    Check,
    NotNull,
    TypeChange,
    Unique,
    Validate,
    cast_operand,
    literal,
    normal_type,
    parse,
    strip_parens,
    text_of,
    tokenize,
)

SHOWN_STATEMENT = 120
SAVEPOINT = "alembic_pg_guard_preflight"


class DataLossError(GuardError):
    """A statement existing rows would break (truncate, round, violate): refused before it ran."""


@dataclass(frozen=True)
class Rows:
    """Rows matching `where`: `describe(count, key, detail)` says what is wrong."""

    where: str
    detail: str
    describe: Callable[[int, str, Any], str]
    loses_data: bool = False


@dataclass(frozen=True)
class Groups:
    """Groups of `keys` (rows passing `where`) holding more than one row."""

    keys: tuple[str, ...]
    where: str
    describe: Callable[[int, str, list[str]], str]


Probe = Rows | Groups


def rows(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''}"


def has(count: int) -> str:
    return "has" if count == 1 else "have"


def shown(value: Any) -> str:
    """A value as SQL would write it, shortened."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        return str(value)
    text = str(value)
    return literal(text if len(text) <= 40 else text[:37] + "...")


INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "int2": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "int": (-(2**31), 2**31 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
    "int8": (-(2**63), 2**63 - 1),
}
INT_RANK = {"int2": 1, "int4": 2, "int8": 3}
INT_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
LENGTH = re.compile(
    r"(?:pg_catalog\.)?(varchar|character varying|char varying|char|character|bpchar|nchar"
    r"|bit varying|varbit|bit)(?:\((\d+)\))?"
)
NUMERIC = re.compile(r"(?:pg_catalog\.)?(?:numeric|decimal)\((\d+)(?:,(-?\d+))?\)")
TIME = re.compile(
    r"(?:pg_catalog\.)?(timestamptz|timetz|timestamp|time)\((\d)\)( with(?:out)? time zone)?"
)


UNLIMITED = ("varchar", "character varying", "char varying", "bpchar", "bit varying", "varbit")


def target_limit(target: str) -> int:
    m = LENGTH.fullmatch(target)
    return int(m.group(2) or 1) if m else 0


def lost_when(target: str, value: str) -> tuple[str, str, str] | None:
    """For a value cast to `target`: the SQL condition of a row it would cut or round, what
    to show of that row, and the unit of a length ("" for other types); None: not measured."""
    if m := LENGTH.fullmatch(target):
        if m.group(2) is None and m.group(1) in UNLIMITED:
            return None
        if m.group(1).startswith(("bit", "varbit")):
            measured, unit = f"length({value})", "bits"
        elif m.group(1) in ("char", "character", "bpchar", "nchar"):  # blank-padded anyway
            measured, unit = f"length(rtrim(({value})::text, ' '))", "characters"
        else:
            measured, unit = f"length(({value})::text)", "characters"
        return f"{measured} > {target_limit(target)}", measured, unit
    v = f"({value})::numeric"
    if m := NUMERIC.fullmatch(target):
        p, s = int(m.group(1)), int(m.group(2) or 0)
        return f"{v} <> round({v}, {s}) OR abs(round({v}, {s})) >= 10::numeric ^ {p - s}", value, ""
    if target in INT_RANGES:
        lo, hi = INT_RANGES[target]
        return f"{v} <> round({v}) OR {v} NOT BETWEEN {lo} AND {hi}", value, ""
    if TIME.fullmatch(target) or target == "date":
        return f"({value})::{target} IS DISTINCT FROM ({value})", value, ""
    return None


class Measure:
    """The catalog and row queries of one statement, on the revision's own DBAPI connection
    (its transaction; no SQLAlchemy events, so the runner's tracker does not see them)."""

    def __init__(self, dbapi: Any, sql: str) -> None:
        self.dbapi, self.sql = dbapi, sql

    def query(self, query: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """One query under a savepoint in a transaction: a failing one changes nothing."""
        in_tx = not getattr(self.dbapi, "autocommit", False)
        with self.dbapi.cursor() as cur:
            if in_tx:
                cur.execute(f"SAVEPOINT {SAVEPOINT}")
            try:
                cur.execute(query, params) if params is not None else cur.execute(query)
                result = cur.fetchall()
            except psycopg2.Error:
                if in_tx:
                    cur.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                    cur.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
                raise
            if in_tx:
                cur.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            return result

    def probes(self, table: str, action: Action) -> tuple[int | None, list[Probe]]:
        (oid,) = self.query("SELECT to_regclass(%s)::oid", [table])[0]
        if oid is None:
            return None, []
        if isinstance(action, TypeChange):
            return oid, self.type_probes(oid, table, action)
        if isinstance(action, NotNull):
            return oid, self.not_null_probes(oid, table, action)
        if isinstance(action, Check):
            return oid, [check_probe(table, action.expr)]
        if isinstance(action, Validate):
            return oid, self.validate_probes(oid, table, action)
        return oid, self.unique_probes(oid, table, action)

    def column(self, oid: int, name: str) -> tuple[str, int, bool] | None:
        found = self.query(
            "SELECT t.typname, a.atttypmod, a.attnotnull FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s AND a.attname = %s "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            [oid, name],
        )
        return found[0] if found else None

    def type_probes(self, oid: int, table: str, change: TypeChange) -> list[Probe]:
        old = self.column(oid, change.column.name)
        if old is None:
            return []
        col, target = change.column.sql, normal_type(change.type_sql)
        value = (
            cast_operand(change.using_toks, lambda t: text_of(self.sql, t)) if change.using else col
        )
        if not change.using and widening(old[0], old[1], target):
            return []
        found: list[Probe] = []
        if change.using:
            found.append(
                Rows(
                    f"{col} IS NOT NULL AND ({change.using}) IS NULL",
                    f"({col})",
                    lambda n, key, was: (
                        f"{rows(n)} of {table} would get {col} NULL from "
                        f"USING {change.using} (e.g. {key}, was {shown(was)})"
                    ),
                    loses_data=True,
                )
            )
        if (loss := lost_when(target, value)) is not None:
            where, measured, unit = loss
            if unit:
                said = f"longer than {target_limit(target)} {unit}"
            else:
                said = f"that {change.type_sql} cannot hold unchanged"
            found.append(
                Rows(
                    where,
                    measured,
                    lambda n, key, was: (
                        f"{rows(n)} of {table} {has(n)} {col} {said} (e.g. {key}, "
                        f"{f'{was} {unit}' if unit else shown(was)})"
                    ),
                    loses_data=True,
                )
            )
        return found

    def not_null_probes(self, oid: int, table: str, action: NotNull) -> list[Probe]:
        old = self.column(oid, action.column.name)
        if old is None or old[2]:
            return []
        # A validated CHECK (col IS NOT NULL) lets PostgreSQL skip its scan: so do we.
        proof = re.compile(
            rf'^\(*("?){re.escape(action.column.name)}\1\s+IS\s+NOT\s+NULL\)*$', re.I
        )
        exprs = self.query(
            "SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint "
            "WHERE conrelid = %s AND contype = 'c' AND convalidated",
            [oid],
        )
        if any(proof.match(e or "") for (e,) in exprs):
            return []
        col = action.column.sql
        return [
            Rows(
                f"{col} IS NULL",
                "NULL",
                lambda n, key, _: f"{rows(n)} of {table} {has(n)} {col} NULL (e.g. {key})",
            )
        ]

    def validate_probes(self, oid: int, table: str, action: Validate) -> list[Probe]:
        found = self.query(
            "SELECT contype, convalidated, pg_get_expr(conbin, conrelid), "
            "(SELECT array_agg(quote_ident(a.attname) ORDER BY k.n) FROM "
            " unnest(conkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a "
            " ON a.attrelid = conrelid AND a.attnum = k.attnum), "
            "(SELECT array_agg(quote_ident(a.attname) ORDER BY k.n) FROM "
            " unnest(confkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a "
            " ON a.attrelid = confrelid AND a.attnum = k.attnum), "
            "confrelid::regclass::text FROM pg_constraint WHERE conrelid = %s AND conname = %s",
            [oid, action.constraint.name],
        )
        if not found or found[0][1]:
            return []
        kind, _, expr, columns, ref_columns, ref_table = found[0]
        if kind == "c" and expr:
            toks = tokenize(expr)
            return [check_probe(table, text_of(expr, strip_parens(toks)) if toks else expr)]
        if kind != "f" or not columns or not ref_columns:
            return []
        present = " AND ".join(f"{table}.{c} IS NOT NULL" for c in columns)
        match = " AND ".join(
            f"r.{rc} = {table}.{c}" for c, rc in zip(columns, ref_columns, strict=True)
        )
        cols = ", ".join(columns)
        return [
            Rows(
                f"{present} AND NOT EXISTS (SELECT 1 FROM {ref_table} r WHERE {match})",
                f"json_build_array({cols})",
                lambda n, key, was: (
                    f"{rows(n)} of {table} {has(n)} ({cols}) with no match in "
                    f"{ref_table} ({', '.join(ref_columns)}) (e.g. {key}, "
                    + ", ".join(f"{c}={shown(v)}" for c, v in zip(columns, was, strict=True))
                    + ")"
                ),
            )
        ]

    def unique_probes(self, oid: int, table: str, unique: Unique) -> list[Probe]:
        if unique.index is not None:
            (exists,) = self.query(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_class t "
                "ON t.relnamespace = c.relnamespace WHERE t.oid = %s AND c.relname = %s)",
                [oid, unique.index.name],
            )[0]
            if exists:
                return []
        keys = ", ".join(unique.keys)
        found: list[Probe] = []
        if unique.primary:
            found.append(
                Rows(
                    " OR ".join(f"{k} IS NULL" for k in unique.keys),
                    "NULL",
                    lambda n, key, _: (
                        f"{rows(n)} of {table} {has(n)} NULL in ({keys}) (e.g. {key})"
                    ),
                )
            )
        filters = [f"{k} IS NOT NULL" for k in unique.keys] if unique.nulls_distinct else []
        filters += [f"({unique.where})"] if unique.where else []
        found.append(
            Groups(
                unique.keys,
                " AND ".join(filters) or "true",
                lambda n, values, on: (
                    f"{n} duplicate value{'s' if n != 1 else ''} of ({keys}) "
                    f"in {table}{' WHERE ' + unique.where if unique.where else ''} "
                    f"(e.g. {values} on {', '.join(on)})"
                ),
            )
        )
        return found

    def primary_key(self, oid: int) -> list[str]:
        found = self.query(
            "SELECT quote_ident(a.attname) FROM pg_index i, "
            "unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) "
            "JOIN pg_attribute a ON a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid ORDER BY k.n",
            [oid],
        )
        return [name for (name,) in found]

    def violation(self, oid: int, table: str, probe: Probe) -> str | None:
        """What is wrong with the rows (one clause), or None when they all fit."""
        pk = self.primary_key(oid) or ["ctid"]
        order = ", ".join(pk)

        def key(values: Sequence[Any]) -> str:
            return ", ".join(f"{k}={shown(v)}" for k, v in zip(pk, values, strict=True))

        if isinstance(probe, Rows):
            found = self.query(
                f"SELECT count(*) OVER (), {probe.detail}, {order} FROM {table} "
                f"WHERE {probe.where} ORDER BY {order} LIMIT 1"
            )
            if not found:
                return None
            count, detail, *values = found[0]
            return probe.describe(count, key(values), detail)
        keys = ", ".join(probe.keys)
        found = self.query(
            f"SELECT count(*) OVER (), count(*), "
            f"to_json((array_agg(json_build_array({order}) ORDER BY {order}))[1:3]), {keys} "
            f"FROM {table} WHERE {probe.where} GROUP BY {keys} HAVING count(*) > 1 "
            f"ORDER BY {keys} LIMIT 1"
        )
        if not found:
            return None
        groups, size, examples, *values = found[0]
        on = [key(e) for e in examples] + (["..."] if size > len(examples) else [])
        shown_values = ", ".join(f"{k}={shown(v)}" for k, v in zip(probe.keys, values, strict=True))
        return probe.describe(groups, shown_values, on)


def check_probe(table: str, expr: str) -> Rows:
    return Rows(
        f"NOT ({expr})",
        "NULL",
        lambda n, key, _: (
            f"{rows(n)} of {table} violate{'s' if n == 1 else ''} CHECK ({expr}) (e.g. {key})"
        ),
    )


def widening(typname: str, typmod: int, target: str) -> bool:
    """The old type fits in the new one whatever the rows hold: no need to read them."""
    if m := LENGTH.fullmatch(target):
        if m.group(2) is None:
            return m.group(1) in UNLIMITED
        old = typmod - 4 if typname in ("varchar", "bpchar") else typmod
        return typname in ("varchar", "bpchar", "bit", "varbit") and 0 <= old <= int(m.group(2))
    if m := NUMERIC.fullmatch(target):
        p, s = int(m.group(1)), int(m.group(2) or 0)
        if typname in INT_DIGITS:
            return s >= 0 and p - s >= INT_DIGITS[typname]
        if typname != "numeric" or typmod < 0:
            return False
        old_p, old_s = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return old_s <= 1000 and s >= old_s and p - s >= old_p - old_s
    if target in INT_RANGES:
        wanted = {"smallint": 1, "int2": 1, "integer": 2, "int": 2, "int4": 2}.get(target, 3)
        return INT_RANK.get(typname, 99) <= wanted
    if m := TIME.fullmatch(target):
        family = m.group(1)
        if m.group(3) and "without" not in m.group(3):
            family += "tz"
        return typname == family and (6 if typmod < 0 else typmod) <= int(m.group(2))
    if target == "date":
        return typname == "date"
    return True  # a type this module does not measure


def refusal(statement: str, revision: str, dbapi: Any, committed: bool) -> str | None:
    """One line refusing `statement` of `revision`, or None when the rows allow it."""
    if not CANDIDATE.match(statement):
        return None
    measure = Measure(dbapi, statement)
    for parsed in parse(statement):
        for action in parsed.actions:
            try:
                oid, probes = measure.probes(parsed.table, action)
                for probe in probes:
                    found = measure.violation(oid, parsed.table, probe) if oid else None
                    if found:
                        return message(statement, revision, action, probe, found, committed)
            except psycopg2.Error:  # a measurement PostgreSQL refuses: the statement's call
                if dbapi.closed:
                    raise
                continue
    return None


def message(
    statement: str, revision: str, action: Action, probe: Probe, found: str, committed: bool
) -> str:
    shown_sql = " ".join(statement.split())
    if len(shown_sql) > SHOWN_STATEMENT:
        shown_sql = shown_sql[: SHOWN_STATEMENT - 3] + "..."
    loses = isinstance(probe, Rows) and probe.loses_data
    what = "would lose data" if loses else "would fail on existing rows"
    if isinstance(action, Unique) and action.concurrently:
        what += " (and leave an INVALID index)"
    done = "this statement did not run" if committed else "nothing was changed"
    fix = (
        "clean or shorten those rows first, in an earlier revision or by hand, or keep the "
        "wider type, then migrate again"
        if loses
        else "fix those rows first, in an earlier revision or by hand, then migrate again"
    )
    return f"revision {revision} {what}: {shown_sql}: {found}; {done}: {fix}"


def listener(running: Callable[[], tuple[str, bool] | None]) -> Callable[..., None]:
    """A `before_cursor_execute` listener: `running()` gives the revision's name and whether
    part of it is committed already, or None outside a revision."""

    def measure_first(conn, cursor, statement, parameters, context, executemany) -> None:
        revision = running()
        if revision is None or executemany or not CANDIDATE.match(statement):
            return
        if parameters or not getattr(context, "no_parameters", False):
            # psycopg2 formats a statement given parameters (`%%` is `%`): read what it sends.
            statement = cursor.mogrify(statement, parameters).decode()
        dbapi = conn.connection.dbapi_connection
        if (line := refusal(statement, revision[0], dbapi, revision[1])) is not None:
            raise DataLossError(line)

    return measure_first

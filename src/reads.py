"""Statements on the pooled asyncpg connection itself: SQLAlchemy Core statements compiled
once per statement object and run by the driver, without SQLAlchemy's execution layer or a
greenlet hop, which together cost more CPU than the query (docs/performance.md). Rows are
dicts keyed by the statement's column labels, converted as SQLAlchemy would convert them."""

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Executable, Integer, String, literal_column
from sqlalchemy.engine import Dialect

NONE: Mapping[str, Any] = MappingProxyType({})
_MARK = "__rendered_{}__"
_MARKS = re.compile(r"__rendered_(\w+?)__")
Processor = Callable[[Any], Any] | None
Row = dict[str, Any]
# A span around each statement, given its SQL (src/telemetry.py), when traced.
SqlSpan = Callable[[str], AbstractContextManager[object]]


def rendered(name: str, type_: type[String] | type[Integer] = String) -> ColumnElement[Any]:
    """A value quoted into the SQL at each execution (from the params, under `name`) rather
    than bound: the planner sees it (a search pattern: the trigram index), where a prepared
    statement's generic plan would not. Strings and integers only."""
    return literal_column(_MARK.format(name), type_=type_)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as the driver runs it: SQL with $n placeholders, and how to fill them."""

    sql: str
    names: tuple[str, ...]  # the bound parameters, in $n order
    defaults: Mapping[str, Any]  # values given when the statement was built
    binds: tuple[Processor, ...]  # SQLAlchemy's conversion of each bound value
    results: tuple[Processor, ...] | None  # of each column; None when none needs one
    rendered: Mapping[str, Processor]  # name -> quoting, for the values rendered()
    takes: frozenset[str]  # every parameter name: others are refused, not dropped

    def query(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        if unknown := params.keys() - self.takes:  # a value that would be lost, say a new
            # column missing from an INSERT's bound columns
            raise TypeError(f"the statement has no parameter {', '.join(sorted(unknown))}")
        sql = self.sql
        for name, quote in self.rendered.items():
            sql = sql.replace(_MARK.format(name), quote(_given(params, name)))
        args = []
        for name, bind in zip(self.names, self.binds, strict=True):
            value = _given(params, name, self.defaults)
            args.append(value if bind is None else bind(value))
        return sql, args

    def row(self, record: asyncpg.Record) -> Row:
        if self.results is None:
            return dict(record)
        return {
            key: value if convert is None else convert(value)
            for (key, value), convert in zip(record.items(), self.results, strict=True)
        }


def _given(params: Mapping[str, Any], name: str, defaults: Mapping[str, Any] = NONE) -> Any:
    try:
        return params[name] if name in params else defaults[name]
    except KeyError:
        raise TypeError(f"no value for the statement's parameter {name!r}") from None


@lru_cache(maxsize=512)
def compiled(stmt: Executable, dialect: Dialect) -> Compiled:
    """Compiled once per statement object: build statements at import, not per request."""
    result = stmt.compile(dialect=dialect)
    sql, names, binds = str(result), tuple(result.positiontup or ()), result.binds
    for name, bind in binds.items():
        if bind.expanding or bind.literal_execute:  # rendered per execution by SQLAlchemy
            raise TypeError(
                f"parameter {name!r}: an IN list or a literal_execute parameter is not run "
                "here; bind one array instead (column == any_(bindparam(name, "
                "type_=ARRAY(...)))) or use rendered()"
            )
    columns = getattr(stmt, "selected_columns", ())
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    marks = set(_MARKS.findall(sql))
    return Compiled(
        sql=sql,
        names=names,
        defaults={n: b.effective_value for n, b in binds.items() if not b.required},
        binds=tuple(binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names),
        results=results if any(results) else None,
        rendered={name: _quoting(name, dialect) for name in marks},
        takes=frozenset(names) | marks,
    )


def _quoting(name: str, dialect: Dialect) -> Callable[[Any], str]:
    quote_str = String().literal_processor(dialect)
    quote_int = Integer().literal_processor(dialect)

    def quote(value: Any) -> str:
        if isinstance(value, str):
            return quote_str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return quote_int(value)
        raise TypeError(f"rendered {name!r} takes a str or an int, not {type(value).__name__}")

    return quote


class Reads:
    """One pooled connection's reads; `Database.read(work)` hands one to `work`."""

    __slots__ = ("_connection", "_dialect", "_span")

    def __init__(
        self, connection: asyncpg.Connection, dialect: Dialect, span: SqlSpan | None = None
    ) -> None:
        self._connection = connection
        self._dialect = dialect
        self._span = span

    async def all(self, stmt: Executable, params: Mapping[str, Any] = NONE) -> list[Row]:
        statement = compiled(stmt, self._dialect)
        records = await self._run(self._connection.fetch, statement, params)
        return [statement.row(record) for record in records]

    async def one(self, stmt: Executable, params: Mapping[str, Any] = NONE) -> Row | None:
        """The first row, or None."""
        statement = compiled(stmt, self._dialect)
        record = await self._run(self._connection.fetchrow, statement, params)
        return None if record is None else statement.row(record)

    async def scalar(self, stmt: Executable, params: Mapping[str, Any] = NONE) -> Any:
        """The first column of the first row, or None."""
        row = await self.one(stmt, params)
        return None if row is None else next(iter(row.values()))

    async def _run(self, fetch, statement: Compiled, params: Mapping[str, Any]) -> Any:
        sql, args = statement.query(params)
        if self._span is None:
            return await fetch(sql, *args)
        with self._span(sql):
            return await fetch(sql, *args)


class Writes(Reads):
    """Reads and writes in one READ COMMITTED transaction; `Database.write(work)` hands one
    to `work`, commits when it returns and rolls back when it raises."""

    __slots__ = ()

    async def execute(self, stmt: Executable, params: Mapping[str, Any] = NONE) -> int:
        """A statement that returns no rows; the number of rows it changed."""
        status = await self._run(self._connection.execute, compiled(stmt, self._dialect), params)
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

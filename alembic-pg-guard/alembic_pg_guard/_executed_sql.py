"""The SQL each revision runs online, captured while a gate migrates a throwaway database.

The offline render (_revision_sql.py) misses what a revision does only online: DDL under
`if context.is_offline_mode(): return`, or a merge revision's operations (it has no
offline range of its own). Each statement is given to the revision file whose code is on
the stack when it runs; the runner's own bookkeeping and the revision's reads are left out.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from alembic.script import Script, ScriptDirectory
from sqlalchemy import Engine, event

from alembic_pg_guard._revision_sql import DIRECTIONS, RenderedRevision, Statement

# A revision's reads (op.get_bind().scalar(...)) and session settings: nothing to lint.
NOT_LINTED = re.compile(
    r"^\s*(SELECT|SHOW|SET|RESET|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)
# Row changes render differently offline (literal VALUES, one row each) than online
# (bound parameters, batches): they are matched by what and where, not by text.
ROW_CHANGE = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO)\s+(\S+)", re.I)
ALTER_TABLE = re.compile(r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(\S+)", re.I)
COLUMN_TYPE = re.compile(
    r"\bALTER\s+(?:COLUMN\s+)?(\"[^\"]+\"|\w+)\s+(?:SET\s+DATA\s+)?TYPE\b", re.IGNORECASE
)
OLD_TYPE = (
    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
    "WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped"
)


def statement_key(sql: str) -> str:
    """What makes two statements the same one, offline and online."""
    if match := ROW_CHANGE.match(sql):
        return f"{' '.join(match.group(1).upper().split())} {match.group(2).strip(';')}"
    return " ".join(sql.split()).rstrip(";").strip()


@dataclass(frozen=True)
class Executed:
    """One statement a revision ran online."""

    sql: str  # as sent to the server, parameters bound
    source_line: int | None  # the line of the revision file that ran it
    in_transaction: bool  # False: in an autocommit_block()
    old_types: tuple[tuple[str, str], ...] = ()  # ALTER COLUMN TYPE: (column, type before)


@dataclass
class ExecutedSql:
    """Per (revision, direction): what it ran, once; absent when it never ran."""

    statements: dict[tuple[str, str], list[Executed]] = field(default_factory=dict)

    def of(self, revision: str, direction: str) -> list[Executed] | None:
        return self.statements.get((revision, direction))


def as_rendered(
    revision: Script, direction: str, ran: list[Executed], lock_ms: int, statement_ms: int
) -> RenderedRevision:
    """What a revision ran, as a script squawk reads like the offline one: the runner's
    timeouts first, BEGIN/COMMIT around the transactional steps."""
    lines = [f"SET lock_timeout = {lock_ms};", f"SET statement_timeout = {statement_ms};"]
    statements = [Statement(text, i + 1, None, False) for i, text in enumerate(lines)]
    open_tx = False

    def add(sql: str, source_line: int | None, in_transaction: bool) -> None:
        statements.append(Statement(sql, len(lines) + 1, source_line, in_transaction))
        lines.extend(sql.split("\n"))

    for step in ran:
        if step.in_transaction != open_tx:
            add("BEGIN;" if step.in_transaction else "COMMIT;", None, open_tx)
            open_tx = step.in_transaction
        sql = step.sql.strip()
        add(sql if sql.endswith(";") else f"{sql};", step.source_line, step.in_transaction)
    if open_tx:
        add("COMMIT;", None, True)
    return RenderedRevision(revision, direction, tuple(statements), "\n".join(lines), online=True)


class Capture:
    """Listens to every statement on `database` while installed (capturing())."""

    def __init__(self, script: ScriptDirectory, database: str) -> None:
        self.files = {
            os.path.realpath(rev.path): rev.revision
            for rev in script.walk_revisions("base", "heads")
        }
        self.database = database
        self.result = ExecutedSql()
        self.recording = True
        self.step: object = None  # the walk's step: a revision's SQL is kept from one run
        self.owner: dict[tuple[str, str], object] = {}
        self.pending: dict[int, tuple[tuple[str, str], int | None, tuple]] = {}

    def record(self, step: object, recording: bool) -> None:
        self.step, self.recording = step, recording

    def _caller(self) -> tuple[tuple[str, str], int | None] | None:
        """(revision, direction) and the line of its file that is running, from the stack."""
        frame, found = inspect.currentframe(), None
        innermost: int | None = None
        while frame is not None:
            revision = self.files.get(os.path.realpath(frame.f_code.co_filename))
            if revision is not None:
                innermost = frame.f_lineno if innermost is None else innermost
                if frame.f_code.co_name in DIRECTIONS:
                    found = (revision, frame.f_code.co_name)
            frame = frame.f_back
        return (found, innermost) if found else None

    def before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.recording or conn.engine.url.database != self.database:
            return
        if NOT_LINTED.match(statement) or (caller := self._caller()) is None:
            return
        key, line = caller
        if self.owner.setdefault(key, self.step) is not self.step:
            return  # its first run is kept; a re-run repeats it
        self.pending[id(cursor)] = (key, line, self._old_types(cursor, statement))

    def after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        found = self.pending.pop(id(cursor), None)
        if found is None:
            return
        key, line, old_types = found
        query = cursor.query  # psycopg2: the statement as sent, parameters bound
        sql = query.decode("utf-8", "replace") if isinstance(query, bytes) else statement
        in_transaction = not cursor.connection.autocommit
        self.result.statements.setdefault(key, []).append(
            Executed(sql, line, in_transaction, old_types)
        )

    @staticmethod
    def _old_types(cursor, statement: str) -> tuple[tuple[str, str], ...]:
        """Each ALTER COLUMN TYPE's column type before the statement, from the catalog."""
        table = ALTER_TABLE.match(statement)
        if table is None:
            return ()
        found = []
        with cursor.connection.cursor() as own:
            for match in COLUMN_TYPE.finditer(statement):
                quoted = match.group(1)
                column = quoted[1:-1] if quoted.startswith('"') else quoted.lower()
                own.execute(OLD_TYPE, (table.group(1), column))
                row = own.fetchone()
                if row is not None:
                    found.append((column, row[0]))
        return tuple(found)

    def ran(self, revision: str, direction: str) -> None:
        """A step without statements still ran: its (empty) SQL is known."""
        self.result.statements.setdefault((revision, direction), [])


@contextmanager
def capturing(script: ScriptDirectory, database: str) -> Iterator[Capture]:
    capture = Capture(script, database)
    event.listen(Engine, "before_cursor_execute", capture.before)
    event.listen(Engine, "after_cursor_execute", capture.after)
    try:
        yield capture
    finally:
        event.remove(Engine, "before_cursor_execute", capture.before)
        event.remove(Engine, "after_cursor_execute", capture.after)

"""One revision's offline SQL (`alembic upgrade|downgrade <range> --sql`), statement by
statement, each with the line of the revision file that emitted it and whether it runs
inside a transaction or in an `autocommit_block()`.

The gates lint this SQL (_gates.py); the source line lets them point
at the op call in the revision file rather than at the rendered SQL.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script

from alembic_pg_guard._config import SETTINGS_ATTRIBUTE
from alembic_pg_guard._errors import GuardError

DIRECTIONS = ("upgrade", "downgrade")
# Alembic's and env.py's own statements, not the revision's.
BOOKKEEPING = re.compile(
    r"^(--|SET |(CREATE|DROP) TABLE alembic_version\b|(INSERT INTO|UPDATE|DELETE FROM) "
    r"alembic_version\b)",
    re.IGNORECASE,
)
VERSION_TABLE_DDL = re.compile(r"^(CREATE|DROP) TABLE alembic_version\b", re.IGNORECASE)
OFFLINE_HINT = (
    "code that needs a database (op.get_bind(), reading rows) must be guarded by "
    "`if not context.is_offline_mode():`, and only the reading: what changes the database "
    "must still be emitted offline"
)


class RenderError(GuardError):
    """The revision does not render offline: one line naming its file and the error."""


class EnvironmentFailure(GuardError):
    """Rendering failed outside the revision (env.py, a missing package): no revision renders."""


@dataclass(frozen=True)
class Statement:
    sql: str  # as rendered, with its terminator
    line: int  # first line in the rendered SQL, from 1
    source_line: int | None  # the line of the revision file that emitted it
    in_transaction: bool  # False: between a COMMIT and the next BEGIN (autocommit)

    @property
    def bookkeeping(self) -> bool:
        return bool(BOOKKEEPING.match(self.sql)) or self.sql.rstrip(";").upper() in {
            "BEGIN",
            "COMMIT",
        }

    def short(self, width: int = 100) -> str:
        text = " ".join(self.sql.split())
        return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class RenderedRevision:
    revision: Script
    direction: str
    statements: tuple[Statement, ...]
    sql: str  # all of it, as `alembic ... --sql` prints it
    online: bool = False  # True: what it ran on a throwaway database (_executed_sql.py)

    def lint_sql(self) -> str:
        """`sql` with Alembic's own version table DDL blanked out, lines kept in place."""
        lines = self.sql.split("\n")
        for s in self.statements:
            if VERSION_TABLE_DDL.match(s.sql):
                for i in range(s.line - 1, s.line - 1 + s.sql.count("\n") + 1):
                    lines[i] = ""
        return "\n".join(lines)

    @property
    def own(self) -> list[Statement]:
        """The revision's own statements: not BEGIN/COMMIT, env.py's SETs or alembic_version."""
        return [s for s in self.statements if not s.bookkeeping]

    def at_sql_line(self, line: int) -> Statement | None:
        """The statement that covers `line` (from 1) of `sql`."""
        found = None
        for statement in self.statements:
            if statement.line > line:
                break
            found = statement
        return found


def display_path(path: str | Path) -> str:
    """Relative to the working directory when under it (what an editor or a terminal opens)."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


class _Recorder(io.StringIO):
    """Alembic writes each offline statement in one write(); note who called for it."""

    def __init__(self, source: Path) -> None:
        super().__init__()
        self.source = os.path.realpath(source)
        self.writes: list[tuple[str, int | None]] = []

    def write(self, text: str) -> int:
        self.writes.append((text, self._caller_line()))
        return super().write(text)

    def _caller_line(self) -> int | None:
        frame = inspect.currentframe()
        while frame is not None:
            if os.path.realpath(frame.f_code.co_filename) == self.source:
                return frame.f_lineno
            frame = frame.f_back
        return None


def revision_range(revision: Script, direction: str) -> str:
    down = revision.down_revision
    if direction == "upgrade":
        return revision.revision if down is None else f"{down}:{revision.revision}"
    return f"{revision.revision}:{down or 'base'}"


def error_line(exc: BaseException, source: str | Path) -> int | None:
    """The last line of `source` in the exception's traceback (or a SyntaxError's own)."""
    source = os.path.realpath(source)
    if isinstance(exc, SyntaxError) and exc.filename:
        if os.path.realpath(exc.filename) == source:
            return exc.lineno
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == source:
            found = frame.lineno
    return found


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (SQLAlchemy's [SQL: ...] and links left out)."""
    orig = getattr(exc, "orig", None)
    if orig is not None and getattr(orig, "pgerror", None):
        parts = [" ".join(p.split()) for p in orig.pgerror.strip().splitlines() if p.strip()]
        parts[0] = parts[0].removeprefix("ERROR: ")
        return f"{type(orig).__name__}: {'; '.join(parts)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def render(cfg: Config, revision: Script, direction: str) -> RenderedRevision:
    """The revision's own range, offline; RenderError if it does not render."""
    source = Path(revision.path)
    buffer = _Recorder(source)
    offline = Config(output_buffer=buffer, stdout=io.StringIO())  # no ini: no logging setup
    offline.set_main_option("script_location", cfg.get_main_option("script_location") or "")
    offline.set_main_option("path_separator", "os")
    if prepend := cfg.get_main_option("prepend_sys_path"):  # where env.py finds the models
        offline.set_main_option("prepend_sys_path", prepend)
    if settings := cfg.attributes.get(SETTINGS_ATTRIBUTE):
        offline.attributes[SETTINGS_ATTRIBUTE] = settings
    target = revision_range(revision, direction)
    try:
        getattr(command, direction)(offline, target, sql=True)
    except Exception as exc:  # anything the revision's code raises: one line, no traceback
        line = error_line(exc, source)
        if line is None and not isinstance(exc, GuardError):
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "site-packages" not in f.filename] or frames
            raise EnvironmentFailure(
                f"alembic {direction} --sql fails before any revision runs, at "
                f"{display_path(ours[-1].filename)}:{ours[-1].lineno}: {one_line(exc)} "
                "(is the environment up to date?)"
            ) from None
        where = f"{display_path(source)}{f':{line}' if line else ''}"
        code = source.read_text().splitlines()[line - 1] if line else ""
        needs_db = any(word in code for word in ("get_bind", "bind.", "connection"))
        hint = f"; {OFFLINE_HINT}" if needs_db or "offline" in str(exc).lower() else ""
        raise RenderError(
            f"{where}: {revision.revision} {direction} does not render offline "
            f"(alembic {direction} {target} --sql): {one_line(exc)}{hint}"
        ) from None
    statements: list[Statement] = []
    line, in_transaction = 1, False
    for text, source_line in buffer.writes:
        sql = text.strip()
        if sql:
            statement = Statement(sql, line, source_line, in_transaction)
            statements.append(statement)
            if sql.upper() == "BEGIN;":
                in_transaction = True
            elif sql.upper() == "COMMIT;":
                in_transaction = False
        line += text.count("\n")
    return RenderedRevision(revision, direction, tuple(statements), buffer.getvalue())

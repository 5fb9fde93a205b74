"""INVALID indexes and NOT VALID constraints the history does not intend.

A timed-out `CREATE INDEX CONCURRENTLY` leaves an INVALID index that `IF NOT EXISTS` then
skips: checked after every revision (in its transaction, so it is not recorded) and by
`migrate` at head. A NOT VALID constraint is intended while a later revision validates it,
or at head when a revision declares it: `not_valid_allow = {"name": "why"}`.
"""

import re
from collections.abc import Iterable
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from alembic_pg_guard._errors import GuardError

ALLOW_NAME = "not_valid_allow"
SCHEMA = "public"
VALIDATE = re.compile(r"VALIDATE\s+CONSTRAINT", re.IGNORECASE)


class LeftoverError(GuardError):
    """An INVALID index or an unintended NOT VALID constraint: one line naming them."""


def invalid_indexes(conn: Connection) -> list[tuple[str, str]]:
    return [
        (row.index, row.table)
        for row in conn.execute(
            text(
                "SELECT idx.relname AS index, tbl.relname AS table FROM pg_index i "
                "JOIN pg_class idx ON idx.oid = i.indexrelid "
                "JOIN pg_class tbl ON tbl.oid = i.indrelid "
                "JOIN pg_namespace ns ON ns.oid = tbl.relnamespace "
                "WHERE ns.nspname = :s AND NOT i.indisvalid AND NOT EXISTS ("  # not one being built
                "SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid"
                ") ORDER BY 1"
            ),
            {"s": SCHEMA},
        )
    ]


def not_valid_constraints(conn: Connection) -> list[tuple[str, str]]:
    return [
        (row.constraint, row.table)
        for row in conn.execute(
            text(
                "SELECT con.conname AS constraint, rel.relname AS table FROM pg_constraint con "
                "JOIN pg_class rel ON rel.oid = con.conrelid "
                "JOIN pg_namespace ns ON ns.oid = rel.relnamespace "
                "WHERE ns.nspname = :s AND NOT con.convalidated ORDER BY 1"
            ),
            {"s": SCHEMA},
        )
    ]


def intended_not_valid(script: ScriptDirectory, heads: Iterable[str], name: str) -> bool:
    """Declared NOT VALID by a revision below `heads`, or validated by one still to run
    (its source says VALIDATE CONSTRAINT and names it)."""
    heads = [h for h in heads if h]
    below = {r.revision for r in script.iterate_revisions(heads, "base")} if heads else set()
    for rev in script.walk_revisions("base", "heads"):
        if rev.revision in below:
            if name in (getattr(rev.module, ALLOW_NAME, None) or {}):
                return True
        else:
            source = Path(rev.path).read_text()
            if VALIDATE.search(source) and name in source:
                return True
    return False


def problems(conn: Connection, script: ScriptDirectory, heads: Iterable[str]) -> list[str]:
    found = [
        f"index {index} on {table} is INVALID (a CREATE INDEX CONCURRENTLY that failed or "
        "timed out; IF NOT EXISTS would skip it): DROP INDEX CONCURRENTLY "
        f"{index}; then migrate again"
        for index, table in invalid_indexes(conn)
    ]
    heads = list(heads)
    found += [
        f"constraint {name} on {table} is NOT VALID and no revision validates it later or "
        f"declares it ({ALLOW_NAME}): ALTER TABLE {table} VALIDATE CONSTRAINT {name} in a "
        "revision (or declare it in the revision that adds it)"
        for name, table in not_valid_constraints(conn)
        if not intended_not_valid(script, heads, name)
    ]
    return found


def refuse(conn: Connection, script: ScriptDirectory, heads: Iterable[str], after: str) -> None:
    """Raise LeftoverError, `after` saying when (e.g. 'after revision X, not recorded')."""
    if found := problems(conn, script, heads):
        raise LeftoverError(f"{after}: {'; '.join(found)}")

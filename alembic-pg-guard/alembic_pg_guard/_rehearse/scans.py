"""Statements that read a whole table while holding a lock that blocks its clients, known
from their SQL: their cost grows with the table, so a fast run on seeded rows proves
nothing. Read from the text, they are found in an autocommit_block too, where the
transaction's counters and locks are gone by the time the statement returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = r'(?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?'
CREATE_INDEX = re.compile(
    rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?"
    rf".*?\bON\s+(?:ONLY\s+)?(?P<table>{NAME})",
    re.IGNORECASE | re.DOTALL,
)
ALTER_TABLE = re.compile(
    rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{NAME})\s+(?P<rest>.*)",
    re.IGNORECASE | re.DOTALL,
)
ADD = rf"\bADD\s+(?:CONSTRAINT\s+{NAME}\s+)?"
VALIDATED = re.compile(ADD + r"(?P<kind>CHECK|FOREIGN\s+KEY)\b", re.IGNORECASE)
INDEXED = re.compile(ADD + r"(?P<kind>UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b", re.IGNORECASE)
SET_NOT_NULL = re.compile(
    rf"\bALTER\s+(?:COLUMN\s+)?(?P<column>{NAME})\s+SET\s+NOT\s+NULL\b", re.IGNORECASE
)
NOT_VALID = re.compile(r"\bNOT\s+VALID\b", re.IGNORECASE)
USING_INDEX = re.compile(r"\bUSING\s+INDEX\s+(?!TABLESPACE)", re.IGNORECASE)

CONCURRENT_FIX = (
    "build it CONCURRENTLY in an autocommit_block "
    "(op.create_index(..., postgresql_concurrently=True))"
)
NOT_VALID_FIX = "add it NOT VALID, then VALIDATE CONSTRAINT in the next revision"
UNIQUE_FIX = (
    "CREATE UNIQUE INDEX CONCURRENTLY in an autocommit_block, then ADD CONSTRAINT ... "
    "UNIQUE USING INDEX in the next revision"
)
NOT_NULL_FIX = (
    "add CHECK ({column} IS NOT NULL) NOT VALID, VALIDATE it in the next revision, then "
    "SET NOT NULL (it then skips the scan) and drop the CHECK"
)
REWRITE_FIX = (
    "expand/contract instead: add a new column, backfill it in batches, switch the code "
    "over, then drop the old one"
)


@dataclass(frozen=True)
class Scan:
    """A statement's whole-table read: on which table, under which lock, and the fix."""

    table: str
    lock: str
    fix: str
    needs_counters: bool = False  # SET NOT NULL skips its scan when a valid CHECK proves it

    @property
    def blocks(self) -> str:
        return "reads and writes" if self.lock == "AccessExclusiveLock" else "writes"


def table_name(name: str) -> str:
    """The table of a possibly schema-qualified, possibly quoted name."""
    last = re.split(r'\.(?=(?:[^"]*"[^"]*")*[^"]*$)', name)[-1]
    return last[1:-1] if last.startswith('"') else last.lower()


def scan_of(sql: str) -> Scan | None:
    """The blocking whole-table read `sql` does, if it is one of the known kinds."""
    if m := CREATE_INDEX.match(sql):
        if m["concurrently"]:
            return None
        return Scan(table_name(m["table"]), "ShareLock", CONCURRENT_FIX)
    m = ALTER_TABLE.match(sql)
    if m is None:
        return None
    table, rest = table_name(m["table"]), m["rest"]
    if (found := VALIDATED.search(rest)) and not NOT_VALID.search(rest):
        foreign = found["kind"].upper().startswith("FOREIGN")
        lock = "ShareRowExclusiveLock" if foreign else "AccessExclusiveLock"
        return Scan(table, lock, NOT_VALID_FIX)
    if INDEXED.search(rest) and not USING_INDEX.search(rest):
        return Scan(table, "AccessExclusiveLock", UNIQUE_FIX)
    if found := SET_NOT_NULL.search(rest):
        fix = NOT_NULL_FIX.format(column=table_name(found["column"]))
        return Scan(table, "AccessExclusiveLock", fix, needs_counters=True)
    return None

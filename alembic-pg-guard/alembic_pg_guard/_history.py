"""History integrity: the database remembers where each applied revision sat in the chain.

Each revision applied through `run_env` (env.py) leaves a row in `alembic_version_history`, in the
revision's own transaction: its id, its down_revision(s) and a hash of the chain from base
to it. A history edited below what a database has applied (a revision inserted mid-chain,
one removed or reordered) no longer matches those rows, and the runner, an app's readiness probe
(`ready_problem`) and the `history` gate refuse it, naming the revision.

The row also holds the revision file's content fingerprint (_fingerprint.py): an applied
revision edited afterwards is refused the same way. A revision only stamped (`alembic
stamp`) is refused by the runner, /ready and the gate until `verify` finds the schema
matches the models, or it is really applied: a stamp alone says nothing about the schema.
"""

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from alembic_pg_guard._config import hints_of
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._fingerprint import comparable, fingerprint
from alembic_pg_guard._settings import GuardSettings, Hints

TABLE = "alembic_version_history"
APPLIED, PARTIAL = "applied", "partial"
# A deliberate rewrite (a squash): make the schema match, then empty the table; the next
# run records the history as it is now.
RESET_HINT = f"if the edit is deliberate, TRUNCATE {TABLE} (a squash: see the guard's README)"
# The note of a row that `alembic stamp` wrote, until `verify` or a real upgrade replaces it.
STAMPED, VERIFIED = "stamped", "stamp verified"
# Set while `verify` runs `alembic check` through env.py: what it verifies is not refused.
VERIFYING: ContextVar[bool] = ContextVar("alembic_pg_guard_verifying", default=False)


@contextmanager
def verifying() -> Iterator[None]:
    token = VERIFYING.set(True)
    try:
        yield
    finally:
        VERIFYING.reset(token)


class HistoryError(GuardError):
    """The code's revision history differs from what the database applied: one line."""


@dataclass(frozen=True)
class Revision:
    revision: str
    down: tuple[str, ...]  # sorted
    chain_hash: str
    title: str
    content: str | None  # the file's fingerprint; None: not comparable (no .py source)


@dataclass(frozen=True)
class CodeHistory:
    """The code's revisions, base first, with each one's chain hash."""

    revisions: dict[str, Revision]
    heads: frozenset[str]
    hints: Hints = field(default_factory=Hints)  # the project's commands, for its messages

    @classmethod
    def of(cls, script: ScriptDirectory, hints: Hints | None = None) -> "CodeHistory":
        found: dict[str, Revision] = {}
        for rev in reversed(list(script.walk_revisions("base", "heads"))):
            down = tuple(sorted(_as_tuple(rev.down_revision)))
            parents = ",".join(found[d].chain_hash for d in down)
            digest = hashlib.sha256(f"{rev.revision}:{parents}".encode()).hexdigest()
            title = (rev.doc or "").strip().splitlines()[0] if rev.doc else ""
            content = fingerprint(rev.path)
            found[rev.revision] = Revision(rev.revision, down, digest, title, content)
        return cls(found, frozenset(script.get_heads()), hints or Hints())

    def below(self, heads: Iterable[str]) -> list[Revision]:
        """`heads` and every revision under them, base first."""
        todo, seen = [h for h in heads if h in self.revisions], set()
        while todo:
            rev = todo.pop()
            if rev not in seen:
                seen.add(rev)
                todo.extend(self.revisions[rev].down)
        return [r for r in self.revisions.values() if r.revision in seen]

    def above(self, revision: str) -> set[str]:
        """Every revision that descends from `revision`."""
        found: set[str] = set()
        todo = [revision]
        while todo:
            parent = todo.pop()
            for rev in self.revisions.values():
                if parent in rev.down and rev.revision not in found:
                    found.add(rev.revision)
                    todo.append(rev.revision)
        return found

    def name(self, revision: str) -> str:
        title = self.revisions[revision].title if revision in self.revisions else ""
        return f"{revision} ({title})" if title else revision


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def code_history(cfg: Config) -> CodeHistory:
    return CodeHistory.of(ScriptDirectory.from_config(cfg), hints_of(cfg))


@dataclass(frozen=True)
class Recorded:
    down: tuple[str, ...]
    chain_hash: str
    content: str | None = None  # None: recorded before fingerprints (backfilled by prepare)
    note: str | None = None
    at: str = ""


def changed(rev: Revision, row: Recorded) -> bool:
    """The revision file differs from the one applied (both fingerprints of this format)."""
    return comparable(row.content) and comparable(rev.content) and row.content != rev.content


def edit_problem(
    code: CodeHistory,
    db_heads: Iterable[str],
    recorded: Mapping[str, Recorded],
    *,
    content: bool = True,
) -> str | None:
    """Why the code's history is not the one the database applied, or None. Revisions
    with no row and no recorded revision above them were applied without the runner (a
    database migrated before this check, offline SQL): the caller backfills them.
    `content`: also refuse an applied revision whose file changed since."""
    db_heads = sorted(db_heads)
    unknown = [h for h in db_heads if h not in code.revisions]
    if unknown:
        return (
            f"history edited: the database is at revision {', '.join(unknown)}, which "
            "alembic/versions no longer has (removed or renamed?): restore that revision file, "
            f"or downgrade the database with the code that has it; {RESET_HINT}"
        )
    if not recorded:
        return None
    where = ", ".join(db_heads)
    for rev in code.below(db_heads):
        row = recorded.get(rev.revision)
        if row is None and not code.above(rev.revision) & recorded.keys():
            continue
        if row is None:
            return (
                f"history edited: revision {code.name(rev.revision)} sits below the "
                f"database's head {where} but was never applied to it (it was inserted into "
                "the middle of the history, so it would never run): put it on top instead, "
                f"down_revision = {where!r}; {RESET_HINT}"
            )
        if row.down != rev.down:
            now = ", ".join(rev.down) or "base"
            then = ", ".join(row.down) or "base"
            return (
                f"history edited: revision {code.name(rev.revision)} now follows {now}, but "
                f"the database applied it after {then} (a revision was inserted, removed or "
                "reordered below what the database has applied): restore the history; new "
                f"revisions go on top of the head; {RESET_HINT}"
            )
        if content and changed(rev, row):
            return (
                f"revision {code.name(rev.revision)} was changed after it was applied to this "
                f"database (its file's operations differ from those applied at {row.at} UTC): "
                "put the change in a new revision and restore this one (a database only you use: "
                "downgrade below it, then migrate again); to accept a deliberate "
                f"edit this database already reflects, run `{code.hints.verify}` (it "
                "compares the schema with the models, then records the file as it is now), "
                "or for a squash, "
                f"TRUNCATE {TABLE} (see the guard's README)"
            )
    return None


def stamp_problem(
    code: CodeHistory, db_heads: Iterable[str], recorded: Mapping[str, Recorded]
) -> str | None:
    """The first revision below `db_heads` that `alembic stamp` recorded and nothing
    verified: its changes may be missing from the schema."""
    stamped = [
        rev
        for rev in code.below(db_heads)
        if (row := recorded.get(rev.revision)) is not None and row.note == STAMPED
    ]
    if not stamped:
        return None
    first, more = stamped[0], len(stamped) - 1
    others = f" (and {more} more above it)" if more else ""
    down = ", ".join(first.down) or "base"
    return (
        f"revision {code.name(first.revision)}{others} was stamped, not applied (`alembic "
        "stamp` records a revision without running it; nothing checked that this database "
        f"has its changes): apply it (`{code.hints.alembic} stamp {down}`, then migrate "
        "again), or, if the schema was made another way (adopting an existing database), "
        f"run `{code.hints.verify}`: it compares the schema with the models and records it "
        "as verified"
    )


def read_recorded(conn: Connection) -> dict[str, Recorded] | None:
    """The rows of applied revisions; None when the table does not exist yet. Read as
    JSON for content_hash: a table made before that column existed reads it as NULL."""
    if conn.scalar(text("SELECT to_regclass(:t)"), {"t": TABLE}) is None:
        return None
    rows = conn.execute(
        text(
            "SELECT revision, down_revisions, chain_hash, note, "
            "to_jsonb(h) ->> 'content_hash' AS content, "
            "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS at "
            f"FROM {TABLE} h WHERE state = :s"
        ),
        {"s": APPLIED},
    )
    return {
        r.revision: Recorded(_split(r.down_revisions), r.chain_hash, r.content, r.note, r.at)
        for r in rows
    }


def _split(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


def db_heads(conn: Connection) -> set[str]:
    """Where the database is (Alembic's alembic_version; empty when it has none)."""
    return set(MigrationContext.configure(conn).get_current_heads())


def check(
    conn: Connection, code: CodeHistory, *, stamps: bool = True, content: bool = True
) -> bool:
    """Raise HistoryError on an edited history, and on an applied revision edited since
    (`content`) or only stamped (`stamps`); True when some applied revisions have no row or
    no content fingerprint yet (to be backfilled)."""
    heads = db_heads(conn)
    recorded = read_recorded(conn) or {}
    verifying = VERIFYING.get()
    problem = edit_problem(code, heads, recorded, content=content and not verifying)
    if problem is None and stamps and not verifying:
        problem = stamp_problem(code, heads, recorded)
    if problem:
        raise HistoryError(problem)
    return any(
        (row := recorded.get(rev.revision)) is None
        or (rev.content is not None and not comparable(row.content))
        for rev in code.below(heads)
    )


def prepare(conn: Connection, code: CodeHistory) -> None:
    """Before migrating (env.py, every online command), in the caller's transaction:
    create or extend the table, refuse an edited history, backfill the rows and
    fingerprints of a database migrated before they existed. Not refused here: a stamp
    (`alembic stamp` undoes one) and an edited revision (a downgrade undoes one:
    `refuse_edited` runs before the first upgrade instead)."""
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        "revision text PRIMARY KEY, down_revisions text NOT NULL, chain_hash text NOT NULL, "
        f"state text NOT NULL DEFAULT '{APPLIED}', note text, "
        "recorded_at timestamptz NOT NULL DEFAULT now(), content_hash text)"
    )
    # Tables made before fingerprints; only when missing: ALTER TABLE locks out /ready.
    has_content = conn.scalar(
        text(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attname = 'content_hash' AND NOT attisdropped"
        ),
        {"t": TABLE},
    )
    if not has_content:
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS content_hash text")
    if check(conn, code, stamps=False, content=False):
        recorded = read_recorded(conn) or {}
        for rev in code.below(db_heads(conn)):
            if (row := recorded.get(rev.revision)) is None:
                record_applied(conn, code, rev.revision, note="backfilled")
            elif rev.content is not None and not comparable(row.content):
                record_content(conn, code, rev.revision)


def refuse_edited(conn: Connection, code: CodeHistory) -> None:
    """Before a run's first upgrade step: an applied revision whose file changed since."""
    if VERIFYING.get():
        return
    if problem := edit_problem(code, db_heads(conn), read_recorded(conn) or {}):
        raise HistoryError(problem)


def record_content(conn: Connection, code: CodeHistory, revision: str) -> None:
    """The revision file's fingerprint as it is now, for what the row already says."""
    conn.execute(
        text(f"UPDATE {TABLE} SET content_hash = :c WHERE revision = :r"),
        {"r": revision, "c": code.revisions[revision].content},
    )


def record_applied(conn: Connection, code: CodeHistory, revision: str, note: str | None = None):
    rev = code.revisions[revision]
    conn.execute(
        text(
            f"INSERT INTO {TABLE} (revision, down_revisions, chain_hash, state, note, "
            "content_hash) VALUES (:r, :d, :h, :s, :n, :c) ON CONFLICT (revision) DO UPDATE "
            "SET down_revisions = EXCLUDED.down_revisions, chain_hash = EXCLUDED.chain_hash, "
            "state = EXCLUDED.state, note = EXCLUDED.note, "
            "content_hash = EXCLUDED.content_hash, recorded_at = now()"
        ),
        {
            "r": revision,
            "d": ",".join(rev.down),
            "h": rev.chain_hash,
            "s": APPLIED,
            "n": note,
            "c": rev.content,
        },
    )


def record_partial(conn: Connection, code: CodeHistory, revision: str, note: str) -> None:
    """A failed revision that left committed steps behind (an autocommit_block)."""
    rev = code.revisions[revision]
    conn.execute(
        text(
            f"INSERT INTO {TABLE} (revision, down_revisions, chain_hash, state, note) "
            "VALUES (:r, :d, :h, :s, :n) ON CONFLICT (revision) DO UPDATE SET "
            "state = EXCLUDED.state, note = EXCLUDED.note, recorded_at = now()"
        ),
        {"r": revision, "d": ",".join(rev.down), "h": rev.chain_hash, "s": PARTIAL, "n": note},
    )


def partial_note(conn: Connection, revision: str) -> tuple[str, str] | None:
    """(when, what) a failed earlier run of `revision` left applied, if it did."""
    if conn.scalar(text("SELECT to_regclass(:t)"), {"t": TABLE}) is None:
        return None
    row = conn.execute(
        text(
            "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS at, note "
            f"FROM {TABLE} WHERE revision = :r AND state = :s"
        ),
        {"r": revision, "s": PARTIAL},
    ).first()
    return (row.at, row.note) if row else None


def forget(conn: Connection, revisions: Iterable[str]) -> None:
    conn.execute(text(f"DELETE FROM {TABLE} WHERE revision = ANY(:r)"), {"r": list(revisions)})


def sync_to(conn: Connection, code: CodeHistory, heads: Iterable[str]) -> None:
    """After a stamp: the rows say exactly what is below the new heads."""
    below = code.below(heads)
    keep = {r.revision for r in below}
    recorded = read_recorded(conn) or {}
    forget(conn, [r for r in recorded if r not in keep])
    for rev in below:
        if rev.revision not in recorded:
            record_applied(conn, code, rev.revision, note="stamped")


def _suspect(code: CodeHistory, rows: Mapping[str, Recorded]) -> bool:
    """A row that a stamp wrote, or of a code revision whose file changed since."""
    return any(
        row.note == STAMPED or (r in code.revisions and changed(code.revisions[r], row))
        for r, row in rows.items()
    )


def _recorded_below(heads: Iterable[str], recorded: Mapping[str, Recorded]) -> set[str]:
    """`heads` and what the database recorded under them (its down_revisions, walked)."""
    seen: set[str] = set()
    todo = list(heads)
    while todo:
        rev = todo.pop()
        if rev not in seen:
            seen.add(rev)
            todo.extend(recorded[rev].down if rev in recorded else ())
    return seen


def ahead_problem(
    code: CodeHistory, heads: Iterable[str], recorded: Mapping[str, Recorded]
) -> str | None:
    """None when a database at `heads` (not the code's) is ahead of the code along the code's
    own history, as in a rolling deploy once the new release migrated: the code's heads were
    applied with the code's chain hashes, and every database head descends from one."""
    heads = set(heads)
    mismatch = (
        f"schema mismatch: database at {', '.join(sorted(heads)) or 'empty'}, "
        f"code expects {', '.join(sorted(code.heads))}"
    )
    if heads <= code.revisions.keys():
        return f"{mismatch} (behind: run `{code.hints.migrate}`)"
    applied = all(
        h in recorded and recorded[h].chain_hash == code.revisions[h].chain_hash for h in code.heads
    )
    below = {h: _recorded_below([h], recorded) for h in heads}
    if (
        not applied
        or not all(code.heads & b for b in below.values())
        or not code.heads <= set().union(*below.values())
    ):
        return (
            f"{mismatch} (diverged: the history the database recorded does not lead from the "
            "code's head to the database's; or a revision file was removed)"
        )
    rows = {r: recorded[r] for r in set().union(*below.values()) if r in recorded}
    if not _suspect(code, rows):
        return None
    if problem := edit_problem(code, code.heads, recorded) or stamp_problem(
        code, code.heads, recorded
    ):
        return problem
    newer = sorted(r for r, row in rows.items() if row.note == STAMPED)
    return (
        f"revision {', '.join(newer)}, above the code's head, was stamped, not applied "
        "(`alembic stamp`): the release that has it refuses it too; apply or verify it there"
    )


def ready_problem(conn: Connection, code: CodeHistory, heads: set[str]) -> str | None:
    """For /ready (read-only, the API's role): why this database, at `heads` (read by the
    caller), is not ready for the code: behind or diverged from it (ahead along the code's
    history is ready: `ahead_problem`), did not apply the code's history, applied a
    revision since edited, or was only stamped. One read of the table when all is well."""
    recorded = read_recorded(conn)
    if heads != code.heads:
        return ahead_problem(code, heads, recorded or {})
    if not recorded:  # migrated before the fingerprints: nothing to compare yet
        return None
    hashes = {r: row.chain_hash for r, row in recorded.items()}
    chain_ok = all(
        h in code.revisions and hashes.get(h) == code.revisions[h].chain_hash for h in heads
    )
    if chain_ok and not _suspect(code, recorded):
        return None
    return edit_problem(code, heads, recorded) or stamp_problem(code, heads, recorded)


def gate_problems(cfg: Config, settings: GuardSettings) -> list[str]:
    """The `history` gate: the configured database, if one answers, applied this history."""
    try:
        url = settings.gate_url or settings.sync_url
    except GuardError as exc:
        print(f"history: skipped ({exc})")
        return []
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            check(conn, code_history(cfg))
    except OperationalError:
        print(f"history: skipped (no database answers at {url.host}:{url.port} to compare with)")
        return []
    except HistoryError as exc:
        return [f"history: {exc}"]
    finally:
        engine.dispose()
    print(f"history: ok (the database at {engine.url.host}:{engine.url.port} applied this history)")
    return []

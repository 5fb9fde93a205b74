"""One revision at a time, as alembic/env.py runs them: which one is running, what of it is
already committed, what happens when it fails.

- Applied: its history row is written and no INVALID index or stray NOT VALID constraint
  is left (_history.py, _leftovers.py), in its own transaction: else not recorded.
- Cancelled by lock_timeout: retried after a jittered, doubling delay, up to
  MIGRATION_LOCK_RETRIES times or MIGRATION_LOCK_RETRY_TOTAL_SECONDS, naming who blocked
  it; then one line. The lock timeout is short: every query on the table waits behind it.
- Failed after an autocommit_block committed part of it: one line saying what stays
  applied; the database remembers it, so a rerun that trips on it says so too.
"""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event

from alembic_pg_guard import _history as history
from alembic_pg_guard import _leftovers as leftovers
from alembic_pg_guard import _model_imports as model_imports
from alembic_pg_guard import _preflight as preflight
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._locks import (
    BlockerSampler,
    concurrent_index_policy,
    is_lock_timeout,
    retry_delay,
)
from alembic_pg_guard._settings import GuardSettings

READ_ONLY = ("SELECT", "SHOW", "SET", "WITH")
# Added to a revision's own exception: the runner then names the revision in one line.
REVISION_NOTE = "in revision "
DOWNGRADE_NOTE = "in the downgrade of revision "
MODELS_NOTE = "it imports the app's models"
EDITED_NOTE = (
    "its file changed since it was applied, so this downgrade undoes the edited upgrade, not "
    "the one that ran: put the applied version back (git stash), downgrade, then restore "
    "the edit and migrate; or let the new downgrade steps tolerate the old schema "
    "(if_exists=True)"
)
SHOWN_STATEMENTS = 3


class RevisionFailure(GuardError):
    """A revision failed in a way worth one line (lock timeout, half applied, leftovers)."""


@dataclass
class StepTracker:
    """The running revision and its statements, split by whether they are committed."""

    current: str | None = None
    downgrading: bool = False
    pending: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    # Called before the run's first upgrade step (a downgrade may undo an edited revision).
    before_upgrading: Callable[[], None] | None = None

    def start(self, revision: str) -> None:
        self.current, self.pending, self.committed = revision, [], []

    def done(self) -> None:
        self.current = None

    def executed(self, conn, cursor, statement, parameters, context, executemany) -> None:
        """After each statement that succeeded: in autocommit it is committed already."""
        if self.current is None or statement.lstrip().upper().startswith(READ_ONLY):
            return
        line = " ".join(statement.split())
        autocommit = getattr(conn.connection.dbapi_connection, "autocommit", False)
        (self.committed if autocommit else self.pending).append(line)

    def on_commit(self, conn) -> None:
        self.committed += self.pending
        self.pending = []

    def summary(self) -> str:
        shown = [s[:90] for s in self.committed[:SHOWN_STATEMENTS]]
        more = len(self.committed) - len(shown)
        return "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")


# The tracker of the run in progress: revision modules may outlive one run.
ACTIVE: list[StepTracker] = []


def _tracked(revision: str, fn: Callable) -> Callable:
    @wraps(fn)
    def run(*args, **kwargs):
        if ACTIVE:
            tracker = ACTIVE[-1]
            tracker.start(revision)
            tracker.downgrading = fn.__name__ == "downgrade"
            if fn.__name__ == "upgrade" and tracker.before_upgrading is not None:
                check, tracker.before_upgrading = tracker.before_upgrading, None
                check()
        return fn(*args, **kwargs)

    run.__tracked__ = True  # type: ignore[attr-defined]
    return run


def track_revisions(script: ScriptDirectory) -> None:
    """Wrap each revision's upgrade/downgrade so the tracker knows which one runs."""
    for rev in script.walk_revisions("base", "heads"):
        for name in ("upgrade", "downgrade"):
            fn = getattr(rev.module, name, None)
            if fn is not None and not getattr(fn, "__tracked__", False):
                setattr(rev.module, name, _tracked(rev.revision, fn))


@contextmanager
def tracking(
    connection: Connection, tracker: StepTracker, name: Callable[[str], str] = str
) -> Iterator[None]:
    # Rows a revision's statement would cut or violate: refused before it runs.
    measure_first = preflight.listener(
        lambda: (name(tracker.current), bool(tracker.committed)) if tracker.current else None
    )
    event.listen(connection, "before_cursor_execute", measure_first)
    event.listen(connection, "after_cursor_execute", tracker.executed)
    event.listen(connection, "commit", tracker.on_commit)
    ACTIVE.append(tracker)
    try:
        yield
    finally:
        ACTIVE.remove(tracker)
        event.remove(connection, "before_cursor_execute", measure_first)
        event.remove(connection, "after_cursor_execute", tracker.executed)
        event.remove(connection, "commit", tracker.on_commit)


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def revision_failure(exc: BaseException) -> str | None:
    """One line for a revision's own error that Run tagged with its revision; else None.
    PostgreSQL's HINT (e.g. `USING` for a cast) is kept: it is often the fix."""
    notes = getattr(exc, "__notes__", [])
    where = [n for n in notes if n.startswith((REVISION_NOTE, DOWNGRADE_NOTE))]
    if not where:
        return None
    orig = getattr(exc, "orig", None) or exc
    hints = [
        " ".join(line.split())
        for line in (getattr(orig, "pgerror", None) or "").splitlines()
        if line.startswith("HINT:")
    ]
    extra = [n for n in notes if n.startswith((MODELS_NOTE, EDITED_NOTE))]
    what = (
        f"the downgrade of revision {where[0].removeprefix(DOWNGRADE_NOTE)} failed, and was "
        "rolled back: the database stays at that revision"
        if where[0].startswith(DOWNGRADE_NOTE)
        else f"revision {where[0].removeprefix(REVISION_NOTE)} failed, and nothing of it is "
        "recorded as applied"
    )
    return f"{what}: {type(orig).__name__}: " + "; ".join([first_line(exc), *hints, *extra])


@dataclass
class Run:
    """Runs `run_migrations` (env.py's context.run_migrations) with the policies above."""

    connection: Connection
    settings: GuardSettings
    script: ScriptDirectory
    external: bool  # a caller's transaction (pytest-alembic): no retry, no bookkeeping
    tracker: StepTracker = field(default_factory=StepTracker)

    def __post_init__(self) -> None:
        self.code = history.CodeHistory.of(self.script, self.settings.hints)
        self.tracker.before_upgrading = lambda: history.refuse_edited(self.connection, self.code)

    def on_version_apply(self, ctx, step, heads, run_args) -> None:
        """Alembic's hook, inside the revision's transaction: record it, or refuse it."""
        conn = ctx.connection
        if step.is_stamp:
            history.sync_to(conn, self.code, heads)
            return
        revision = step.up_revision_id
        if step.is_upgrade:
            history.record_applied(conn, self.code, revision)
        else:
            history.forget(conn, [revision])
        leftovers.refuse(
            conn,
            self.script,
            heads,
            f"revision {self.code.name(revision)} is not recorded as "
            f"{'applied' if step.is_upgrade else 'undone'}",
        )
        self.tracker.done()

    def __call__(self, run_migrations: Callable[[], None]) -> None:
        track_revisions(self.script)
        s = self.settings
        pid = self.connection.connection.dbapi_connection.get_backend_pid()
        # A few samples per lock_timeout: the last one before the cancel is the blocker.
        lock_ms = s.lock_timeout_ms
        interval = min(max(lock_ms / 4000, 0.02), 0.5) if lock_ms else 0.5
        attempts: dict[str | None, tuple[int, float]] = {}  # (failures, time of the first)
        with (
            BlockerSampler(self.connection.engine.url, pid, interval) as sampler,
            concurrent_index_policy(self.connection, s) as policy,
            tracking(self.connection, self.tracker, self.code.name),
        ):
            while True:
                sampler.reset()
                try:
                    run_migrations()
                    return
                except Exception as exc:
                    revision, concurrent = self.tracker.current, policy.running
                    if revision is None:
                        raise
                    delay = self._failed(revision, exc, concurrent, sampler, attempts)
                    if delay is None:
                        down = self.tracker.downgrading
                        note = DOWNGRADE_NOTE if down else REVISION_NOTE
                        exc.add_note(f"{note}{self.code.name(revision)}")
                        if down and self._edited_since_applied(revision):
                            exc.add_note(EDITED_NOTE)
                        path = self.script.get_revision(revision).path
                        if hint := model_imports.failure_hint(path):
                            exc.add_note(hint)
                        raise
                    time.sleep(delay)

    def _failed(
        self,
        revision: str,
        exc: Exception,
        concurrent: str | None,
        sampler: BlockerSampler,
        attempts: dict[str | None, tuple[int, float]],
    ) -> float | None:
        """Raise one line, or return the delay before a retry (None: the error as it is)."""
        s, name = self.settings, self.code.name(revision)
        half = self._remember_partial(revision)
        if isinstance(exc, GuardError):  # leftovers, from on_version_apply
            raise RevisionFailure(f"{exc}{half}") from None
        if is_lock_timeout(exc) and concurrent:
            raise RevisionFailure(
                f"revision {name}: {concurrent[:80]} waited "
                f"MIGRATION_CONCURRENT_INDEX_TIMEOUT_MS={s.concurrent_index_timeout_ms}"
                f" for older transactions; {sampler.describe()}: end it "
                "(SELECT pg_terminate_backend(<pid>)) or raise the setting, then migrate again "
                "(a cancelled build leaves an INVALID index: DROP INDEX CONCURRENTLY it unless "
                f"the revision does){half}"
            ) from None
        if is_lock_timeout(exc):
            tried, first = attempts.get(revision, (0, time.monotonic()))
            attempts[revision] = (tried := tried + 1, first)
            delay = retry_delay(s.lock_retry_delay_seconds, tried)
            spent = time.monotonic() - first
            if (
                self.external
                or tried > s.lock_retries
                or spent + delay > s.lock_retry_total_seconds
            ):
                statement = " ".join(str(getattr(exc, "statement", "")).split())[:80]
                raise RevisionFailure(
                    f"revision {name} could not get its locks in {tried} attempt(s) over "
                    f"{spent:.1f}s, each cancelled after MIGRATION_LOCK_TIMEOUT_MS="
                    f"{s.lock_timeout_ms} ({first_line(exc)}: {statement}); "
                    f"{sampler.describe()}: end that session or migrate when it is idle, or "
                    f"raise MIGRATION_LOCK_RETRIES / MIGRATION_LOCK_RETRY_TOTAL_SECONDS{half}"
                ) from None
            print(
                f"lock timeout in revision {name} (attempt {tried} of "
                f"{s.lock_retries + 1}): {sampler.describe()}; retrying in {delay:.2f}s",
                file=sys.stderr,
                flush=True,
            )
            return delay
        if half:
            raise RevisionFailure(f"revision {name} failed: {first_line(exc)}{half}") from None
        if earlier := self._earlier_partial(revision):
            raise RevisionFailure(f"revision {name} failed: {first_line(exc)}; {earlier}") from None
        return None

    def _edited_since_applied(self, revision: str) -> bool:
        if self.external:
            return False
        if self.connection.in_transaction():
            self.connection.rollback()
        recorded = history.read_recorded(self.connection) or {}
        if self.connection.in_transaction():
            self.connection.rollback()
        row = recorded.get(revision)
        return row is not None and history.changed(self.code.revisions[revision], row)

    def _remember_partial(self, revision: str) -> str:
        """When the failed revision had committed statements: record it, say what stays."""
        if not self.tracker.committed:
            return ""
        summary = self.tracker.summary()
        if not self.external:
            if self.connection.in_transaction():
                self.connection.rollback()
            with self.connection.begin():
                history.record_partial(self.connection, self.code, revision, summary)
        return (
            f"; before failing it had committed (an autocommit_block), and these stay "
            f"applied: {summary}; a rerun runs them again: undo them first unless they are "
            "re-runnable (IF NOT EXISTS, DROP ... IF EXISTS first)"
        )

    def _earlier_partial(self, revision: str) -> str | None:
        if self.external:
            return None
        if self.connection.in_transaction():
            self.connection.rollback()
        found = history.partial_note(self.connection, revision)
        if self.connection.in_transaction():
            self.connection.rollback()
        if found is None:
            return None
        at, note = found
        return (
            f"a failed run at {at} UTC left part of this revision applied ({note}): undo that "
            "part or make the revision re-runnable, then migrate again"
        )

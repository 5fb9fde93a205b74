"""The body of a project's env.py: synchronous runs under the guard.

Online runs hold the migration lock and give each migration its own transaction with
lock/statement timeouts; the history table refuses an edited history and records each
revision's place in it; lock timeouts are retried; leftovers (INVALID indexes) and
half-applied revisions stop a run in one line. Autogenerate compares enums and CHECK
constraints too, skips empty revisions and refuses a drop + add that looks like a rename.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import NoReturn

from alembic.config import Config
from alembic.script.revision import MultipleHeads, RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData
from sqlalchemy.exc import NoReferenceError, OperationalError

from alembic_pg_guard import _autogenerate as autogenerate
from alembic_pg_guard import _history as history
from alembic_pg_guard._config import settings_of
from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._runner import connection_problem, migration_lock, sync_engine
from alembic_pg_guard._settings import GuardSettings, Hints
from alembic_pg_guard._steps import Run, first_line, revision_failure

TRUTHY = {"1", "true", "yes"}


def refuse(config: Config, message: str) -> NoReturn:
    """One line. On the command line, alembic would print a CommandError twice (logged,
    then "FAILED:") and exit 255: there it is `error: ...` on stderr, exit 1."""
    if config.cmd_opts is not None:
        sys.exit(f"error: {message}")
    raise CommandError(message)


def forked(heads: Sequence[str], hints: Hints) -> str:
    """`upgrade head` on two heads: how to join them (alembic's hint, '<branchname>@head',
    would run one branch and leave the fork in place)."""
    return (
        f"the history has {len(heads)} heads ({', '.join(sorted(heads))}): two branches each "
        f"added a revision; join them with `{hints.alembic} merge heads -m 'merge heads'` "
        "and commit the new file (or rebase one: set its down_revision to the other's revision)"
    )


# How often a running statement checks that the runner is still there (PostgreSQL 14+):
# a killed runner's DDL, and the locks it holds, end within this instead of at its end.
CLIENT_CHECK_MS = 2_000


def end_with_the_client(connection: Connection) -> None:
    if connection.dialect.server_version_info >= (14,):
        connection.exec_driver_sql(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")


class Environment:
    """One env.py run: `context` is alembic's, `metadata` the project's models."""

    def __init__(
        self,
        context: ModuleType,
        metadata: MetaData,
        skip_tables: Iterable[str],
        plugins: Iterable[str],
    ):
        self.context, self.config = context, context.config
        self.skip = frozenset(skip_tables) | {history.TABLE}
        self.options = {
            "target_metadata": metadata,
            "compare_type": True,
            "compare_server_default": True,
            "autogenerate_plugins": [*autogenerate.AUTOGENERATE_PLUGINS, *plugins],
            "transaction_per_migration": True,
            "include_object": self.include_object,
        }

    def include_object(self, obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "table" and reflected and compare_to is None:
            return name not in self.skip
        return True

    def settings(self) -> GuardSettings:
        """The caller's settings, else alembic.ini's; bad ones are one line, not a traceback."""
        try:
            return settings_of(self.config)
        except GuardError as exc:
            refuse(self.config, str(exc))

    def revision_directives(self, context_, revision, directives) -> None:
        """The autogenerate guards; -x allow_drop_add=1 (or the setting) opts out."""
        given = self.context.get_x_argument(as_dictionary=True).get("allow_drop_add", "")
        settings = self.settings()
        allowed = given.lower() in TRUTHY or settings.allow_drop_add
        autogenerate.process_revision_directives(
            context_, revision, directives, allow_drop_add=allowed, hints=settings.hints
        )

    def offline(self) -> None:
        """Emit SQL for review or a DBA (`alembic upgrade head --sql`); needs no database."""
        limits = self.settings()
        self.context.configure(dialect_name="postgresql", literal_binds=True, **self.options)
        with self.context.begin_transaction():
            # The same limits as online runs, for whoever runs this SQL (and for squawk).
            self.context.execute(f"SET lock_timeout = {limits.lock_timeout_ms}")
            self.context.execute(f"SET statement_timeout = {limits.statement_timeout_ms}")
            self.context.run_migrations()

    def run_with(self, connection: Connection, limits: GuardSettings) -> None:
        # A caller's open transaction (pytest-alembic) is theirs to commit or roll back.
        external = connection.in_transaction()
        # Session-level, so every per-migration transaction is bounded; committed so that
        # Alembic starts its own transactions on a clean connection.
        connection.exec_driver_sql(f"SET lock_timeout = {limits.lock_timeout_ms}")
        connection.exec_driver_sql(f"SET statement_timeout = {limits.statement_timeout_ms}")
        end_with_the_client(connection)
        run = Run(connection, limits, self.context.script, external)
        history.prepare(connection, run.code)  # under the lock: refuse an edited history
        if self.to_head(run.code.heads):  # `alembic upgrade head` with nothing left to run too
            history.refuse_edited(connection, run.code)
        if not external:
            connection.commit()
        self.context.configure(
            connection=connection,
            process_revision_directives=self.revision_directives,
            on_version_apply=run.on_version_apply,
            **self.options,
        )
        with self.context.begin_transaction():
            run(self.context.run_migrations)

    def to_head(self, heads: frozenset[str]) -> bool:
        """Whether the command (upgrade, stamp) goes to the code's heads; downgrades and
        commands with no destination (current, check, revision) do not."""
        try:
            destination = self.context.get_revision_argument()
        except (KeyError, CommandError, RevisionError):
            return False
        given = (destination,) if isinstance(destination, str) else tuple(destination or ())
        return bool(given) and set(given) == set(heads)

    def online(self) -> None:
        limits, config = self.settings(), self.config
        # Programmatic callers: a Connection, or an Engine / anything with .connect()
        # (pytest-alembic passes its Engine, or a wrapper around its open connection).
        given = config.attributes.get("connection")
        try:
            engine = given.engine if given is not None else sync_engine(limits)
            with migration_lock(engine, limits):
                if isinstance(given, Connection):
                    self.run_with(given, limits)
                else:
                    with (given or engine).connect() as connection:
                        self.run_with(connection, limits)
        except GuardError as exc:  # the lock wait ran out, a setting, a refusal: one line
            refuse(config, str(exc))
        except CommandError as exc:  # alembic's own ("Target database is not up to date."): once
            if isinstance(exc.__cause__, MultipleHeads):
                refuse(config, forked(self.context.script.get_heads(), limits.hints))
            refuse(config, str(exc))
        except Exception as exc:
            # A revision's own error: one line on the command line; programmatic callers
            # (the runner, pytest-alembic, tests) get the exception itself.
            if (message := revision_failure(exc)) is not None:
                if config.cmd_opts is None:
                    raise
                refuse(config, message)
            if isinstance(exc, NoReferenceError):  # e.g. a __tablename__ renamed, not its FKs
                refuse(
                    config,
                    f"{limits.hints.models} does not hold together: {first_line(exc)}; "
                    "fix that ForeignKey",
                )
            if not isinstance(exc, OperationalError):
                raise
            if exc.connection_invalidated or "connect" not in str(exc.orig).lower():
                raise
            refuse(config, connection_problem(engine.url, exc, limits.hints))


def run_env(
    context: ModuleType,
    metadata: MetaData,
    *,
    skip_tables: Iterable[str] = (),
    plugins: Iterable[str] = (),
) -> None:
    """All of env.py after its logging setup: `context` is `alembic.context`, `metadata`
    the models'; `skip_tables` are tables in the database that are not the models' (an
    extension's, another tool's): autogenerate never proposes to drop them. `plugins`:
    the names of the project's own Alembic autogenerate plugins, loaded after the guard's."""
    env = Environment(context, metadata, skip_tables, plugins)
    if context.is_offline_mode():
        env.offline()
    else:
        env.online()

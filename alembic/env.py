"""Alembic environment: synchronous psycopg2, models from src.models.

Settings come from `config.attributes["settings"]` when a caller (src.migrate, the
gates, the tests) passes them, else from the environment, read once here.

Online runs hold the project's migration lock (src.migrate) and give each migration
its own transaction with lock/statement timeouts; src.history refuses an edited history
and records each revision's place in it; src.steps retries lock timeouts and refuses
leftovers (INVALID indexes) and half-applied revisions in one line. Autogenerate compares
enums and CHECK constraints too, skips empty revisions and refuses a drop + add that looks
like a rename (src.autogenerate).
"""

import sys
from collections.abc import Sequence
from logging.config import fileConfig
from typing import NoReturn

from alembic import context
from alembic.script.revision import MultipleHeads
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import NoReferenceError, OperationalError

from src import autogenerate, history
from src.cli import CommandFailure
from src.config import Settings, read_settings
from src.migrate import (
    SETTINGS_ATTRIBUTE,
    connection_problem,
    migration_lock,
    sync_engine,
)
from src.models import Base
from src.steps import Run, first_line, revision_failure

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# Tables that live in our database but are not ours (extensions, other tools).
UNOWNED_TABLES = frozenset({"spatial_ref_sys"})
# The runner's own bookkeeping, next to alembic_version (src/history.py).
RUNNER_TABLES = frozenset({history.TABLE})

COMPARE_OPTIONS = {
    "target_metadata": target_metadata,
    "compare_type": True,
    "compare_server_default": True,
    "autogenerate_plugins": autogenerate.AUTOGENERATE_PLUGINS,
    "transaction_per_migration": True,
}


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table" and reflected and compare_to is None:
        return name not in UNOWNED_TABLES | RUNNER_TABLES
    return True


def revision_directives(context_, revision, directives) -> None:
    """src.autogenerate's guards; -x allow_drop_add=1 or ALEMBIC_ALLOW_DROP_ADD=1 opts out."""
    given = context.get_x_argument(as_dictionary=True).get("allow_drop_add", "")
    allowed = given.lower() in {"1", "true", "yes"} or settings().alembic_allow_drop_add
    autogenerate.process_revision_directives(context_, revision, directives, allow_drop_add=allowed)


def refuse(message: str) -> NoReturn:
    """One line. On the command line, alembic would print a CommandError twice (logged,
    then "FAILED:") and exit 255: there it is `error: ...` on stderr, exit 1, as migrate."""
    if config.cmd_opts is not None:
        sys.exit(f"error: {message}")
    raise CommandError(message)


def forked(heads: Sequence[str]) -> str:
    """`upgrade head` on two heads: how to join them (alembic's hint, '<branchname>@head',
    would run one branch and leave the fork in place)."""
    return (
        f"the history has {len(heads)} heads ({', '.join(sorted(heads))}): two branches each "
        "added a revision; join them with `pipenv run alembic merge heads -m 'merge heads'` "
        "and commit the new file (or rebase one: set its down_revision to the other's revision)"
    )


def settings() -> Settings:
    """The caller's settings, else the environment's; bad ones are one line, not a traceback."""
    given = config.attributes.get(SETTINGS_ATTRIBUTE)
    if given is not None:
        return given
    try:
        config.attributes[SETTINGS_ATTRIBUTE] = read_settings()
    except CommandFailure as exc:
        refuse(str(exc))
    return config.attributes[SETTINGS_ATTRIBUTE]


def run_migrations_offline() -> None:
    """Emit SQL for review or a DBA (`alembic upgrade head --sql`); needs no database."""
    limits = settings()
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        include_object=include_object,
        **COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        # The same limits as online runs, for whoever runs this SQL (and for squawk).
        context.execute(f"SET lock_timeout = {limits.migration_lock_timeout_ms}")
        context.execute(f"SET statement_timeout = {limits.migration_statement_timeout_ms}")
        context.run_migrations()


def run_with(connection: Connection, limits: Settings) -> None:
    # A caller's open transaction (pytest-alembic) is theirs to commit or roll back.
    external = connection.in_transaction()
    # Session-level, so every per-migration transaction is bounded; committed so that
    # Alembic starts its own transactions on a clean connection.
    connection.exec_driver_sql(f"SET lock_timeout = {limits.migration_lock_timeout_ms}")
    connection.exec_driver_sql(f"SET statement_timeout = {limits.migration_statement_timeout_ms}")
    run = Run(connection, limits, context.script, external)
    history.prepare(connection, run.code)  # under the lock: refuse an edited history, backfill
    if not external:
        connection.commit()
    context.configure(
        connection=connection,
        include_object=include_object,
        process_revision_directives=revision_directives,
        on_version_apply=run.on_version_apply,
        **COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        run(context.run_migrations)


def run_migrations_online() -> None:
    limits = settings()
    # Programmatic callers: a Connection, or an Engine / anything with .connect()
    # (pytest-alembic passes its Engine, or a wrapper around its open connection).
    given = config.attributes.get("connection")
    try:
        engine = given.engine if given is not None else sync_engine(limits)
        with migration_lock(engine, limits.migration_lock_wait_seconds):
            if isinstance(given, Connection):
                run_with(given, limits)
            else:
                with (given or engine).connect() as connection:
                    run_with(connection, limits)
    except CommandFailure as exc:  # the lock wait ran out, a setting, a refusal: one line
        refuse(str(exc))
    except CommandError as exc:  # alembic's own ("Target database is not up to date."): once
        if isinstance(exc.__cause__, MultipleHeads):
            refuse(forked(context.script.get_heads()))
        refuse(str(exc))
    except Exception as exc:
        # A revision's own error: one line on the command line; its callers (src.migrate,
        # pytest-alembic, the tests) get the exception itself.
        if (message := revision_failure(exc)) is not None:
            if config.cmd_opts is None:
                raise
            refuse(message)
        if isinstance(exc, NoReferenceError):  # e.g. a __tablename__ renamed, not its FKs
            refuse(f"src/models.py does not hold together: {first_line(exc)}; fix that ForeignKey")
        if not isinstance(exc, OperationalError):
            raise
        if exc.connection_invalidated or "connect" not in str(exc.orig).lower():
            raise
        refuse(connection_problem(engine.url, exc))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

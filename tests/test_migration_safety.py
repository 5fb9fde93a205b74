"""The migration safety nets, each shown working against a real PostgreSQL.

- pytest-alembic's built-in tests (single head, upgrade, models match the DDL, up/down
  consistency) and its experimental downgrade-leaves-no-trace, on a fresh database;
- a stairway: every revision up, down, up, with rows seeded before each step;
- racing migrators, a failing revision, the lock and timeouts, and the README's
  autogenerate walkthrough in a scratch copy of the project.

Everything runs over whatever revisions alembic/versions holds; deliberately bad
revisions only ever live in temporary copies.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pycountry
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from pytest_alembic import runner as pytest_alembic_runner
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace as leaves_no_trace
from sqlalchemy import URL, Engine, MetaData, Table, create_engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from src.config import PROJECT_ROOT, get_settings
from src.migrate import MIGRATION_LOCK_ID, MigrationError, migration_lock
from src.migrate import alembic_config as project_config

__all__ = [  # pytest-alembic's built-in tests, collected here against our fixtures
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

PROJECT_FILES = ("src", "alembic", "alembic.ini", "pyproject.toml")
VERSION_TABLE = "alembic_version"


# --- helpers shared with tests/test_migration_checks.py -------------------------------


@contextmanager
def fresh_database(server: Engine) -> Iterator[URL]:
    """An empty database on the test server, dropped afterwards (advisory locks are
    per database, so it does not contend with the session database's migrators)."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        try:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != "42501":  # insufficient_privilege
                raise
            pytest.skip("needs a fresh database: give TEST_DATABASE_URL's user CREATEDB")
    try:
        yield server.url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def config_for(engine: Engine, script_location: Path | None = None) -> Config:
    """The project's alembic config, run on `engine` (env.py uses the given connection)."""
    cfg = project_config()
    if script_location is not None:
        cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["connection"] = engine
    return cfg


def copy_project(dest: Path) -> Path:
    """What the alembic CLI needs of the project, copied into `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def cli_env(url: URL | None = None, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: this venv's tools first, the database at `url`."""
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if url is not None:
        env["DATABASE_URL"] = url_string(url)
    return env


def run_python(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(project_config())


def revisions_in_order(script: ScriptDirectory):
    return list(reversed(list(script.walk_revisions("base", "heads"))))


def write_revision(versions: Path, revision: str, down_revision: str | None, body: str) -> Path:
    """A revision file in a (temporary) versions folder."""
    path = versions / f"{revision}_test_only.py"
    path.write_text(
        f'"""test-only revision {revision}"""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n" + body
    )
    return path


# A schema snapshot, from the catalogs: what a migration may change, order-insensitive.
SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length,
               numeric_precision, is_nullable, column_default, is_identity
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, con.convalidated,
               pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public'""",
    "indexes": """
        SELECT tbl.relname, idx.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
        FROM pg_index i
        JOIN pg_class idx ON idx.oid = i.indexrelid
        JOIN pg_class tbl ON tbl.oid = i.indrelid
        JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
        WHERE ns.nspname = 'public'""",
    "sequences": """
        SELECT sequence_name, data_type FROM information_schema.sequences
        WHERE sequence_schema = 'public'""",
    "types": """
        SELECT t.typname, t.typtype, pg_catalog.format_type(t.typbasetype, NULL),
               array_to_string(array_agg(e.enumlabel ORDER BY e.enumsortorder), ',')
        FROM pg_type t JOIN pg_namespace ns ON ns.oid = t.typnamespace
        LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE ns.nspname = 'public' AND t.typtype IN ('e', 'd')
        GROUP BY t.typname, t.typtype, t.typbasetype""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "triggers": """
        SELECT tbl.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class tbl ON tbl.oid = t.tgrelid
        JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
        WHERE ns.nspname = 'public' AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
        WHERE ns.nspname = 'public' AND p.prokind IN ('f', 'p')""",
    "extensions": "SELECT extname FROM pg_extension",
}


def schema_snapshot(engine: Engine) -> dict[str, set[tuple]]:
    """Everything about the schema but alembic's own version table."""
    with engine.connect() as conn:
        snapshot = {
            kind: {tuple(row) for row in conn.exec_driver_sql(sql)}
            for kind, sql in SNAPSHOT_QUERIES.items()
        }
    for kind in ("columns", "constraints", "indexes", "triggers"):
        snapshot[kind] = {row for row in snapshot[kind] if row[0] != VERSION_TABLE}
    return snapshot


def schema_diff(before: dict[str, set[tuple]], after: dict[str, set[tuple]]) -> list[str]:
    lines = []
    for kind in before:
        lines += [f"{kind} gone: {row}" for row in sorted(before[kind] - after[kind], key=str)]
        lines += [f"{kind} new:  {row}" for row in sorted(after[kind] - before[kind], key=str)]
    return lines


def current_version(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        has_table = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not has_table:
            return set()
        return set(conn.scalars(text("SELECT version_num FROM alembic_version")))


def row_counts(engine: Engine) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return {
            name: conn.scalar(select(func.count()).select_from(table))
            for name, table in metadata.tables.items()
        }


# --- pytest-alembic ------------------------------------------------------------------


@pytest.fixture
def alembic_config() -> Config:
    """pytest-alembic's fixture, overridden: the project's alembic.ini and alembic/."""
    return project_config()


@pytest.fixture
def alembic_engine(sync_engine: Engine) -> Iterator[Engine]:
    """A new, empty PostgreSQL database for each pytest-alembic test."""
    with fresh_database(sync_engine) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield engine
        finally:
            engine.dispose()


def autocommit_revisions(script: ScriptDirectory) -> list[str]:
    """Revisions that step out of the transaction (CONCURRENTLY, VALIDATE, ...)."""
    return [
        rev.revision
        for rev in revisions_in_order(script)
        if "autocommit_block" in Path(rev.path).read_text()
    ]


def test_downgrade_leaves_no_trace_before_autocommit_revisions(
    alembic_engine: Engine, tmp_path: Path
):
    """pytest-alembic's experimental test, over the prefix of the history it can handle.

    It runs every upgrade/downgrade inside one outer transaction and rolls back to
    savepoints, so a revision with an `autocommit_block()` (which must commit) cannot
    run under it. The stairway test below checks the whole history the same way
    (schema identical after up+down), one real transaction per step.
    """
    script = script_directory()
    ordered = [rev.revision for rev in revisions_in_order(script)]
    blocked = autocommit_revisions(script)
    prefix = ordered[: ordered.index(blocked[0])] if blocked else ordered
    if len(prefix) < 2:
        pytest.skip(f"the history before the first autocommit revision is too short: {prefix}")
    scratch = tmp_path / "alembic"
    shutil.copytree(PROJECT_ROOT / "alembic", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    keep = set(prefix)
    for rev in script.walk_revisions("base", "heads"):
        if rev.revision not in keep:
            (scratch / "versions" / Path(rev.path).name).unlink()
    cfg = project_config()
    cfg.set_main_option("script_location", str(scratch))
    with pytest_alembic_runner(
        config=PytestAlembicConfig(alembic_config=cfg), engine=alembic_engine
    ) as runner:
        assert runner.history.revisions[1:-1] == prefix  # base, ..., heads
        leaves_no_trace(runner)


def test_experimental_downgrade_leaves_no_trace_cannot_run_autocommit_revisions(
    alembic_engine: Engine,
):
    """Documents the limit above: on the whole history it fails at the first such revision."""
    blocked = autocommit_revisions(script_directory())
    if not blocked:
        leaves_no_trace_on_full_history(alembic_engine)  # nothing blocks it: it must pass
        return
    # alembic cannot commit a transaction it did not begin: it asserts in autocommit_block.
    with pytest.raises(AssertionError) as failure:
        leaves_no_trace_on_full_history(alembic_engine)
    assert "autocommit_block" in {entry.name for entry in failure.traceback}


def leaves_no_trace_on_full_history(engine: Engine) -> None:
    with pytest_alembic_runner(
        config=PytestAlembicConfig(alembic_config=project_config()), engine=engine
    ) as runner:
        leaves_no_trace(runner)


# --- stairway ------------------------------------------------------------------------


def seed_candidates() -> Iterator[dict]:
    """Countries a client could have created: real ISO 3166 codes from the end of the
    alphabet (so backfills find them) with a name of their own (a row identical to the ISO
    data is, by design, removed with it by the ISO-load revision's downgrade); then the
    user-assigned codes (XA.., XAA..) once the real ones are all taken."""
    for c in sorted(pycountry.countries, key=lambda c: c.alpha_2, reverse=True):
        yield {
            "alpha2": c.alpha_2,
            "alpha3": c.alpha_3,
            "name": f"{c.name} (a client's row)",
            "numeric": c.numeric,
            "official_name": getattr(c, "official_name", None),
        }
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        yield {"alpha2": f"X{letter}", "alpha3": f"X{letter}X", "name": f"Private use X{letter}"}


def seed_values(table: Table, conn) -> dict:
    """The next seed row for `country` as the table looks now."""
    taken = {row.alpha2 for row in conn.execute(select(table.c.alpha2))}
    known = next(c for c in seed_candidates() if c["alpha2"] not in taken)
    values = {}
    for column in table.columns:
        if column.name in known:
            values[column.name] = known[column.name]
        elif column.nullable or column.server_default is not None or column.identity:
            continue
        elif column.autoincrement is True and column.primary_key:
            continue
        else:
            pytest.fail(
                f"the stairway test does not know how to seed the new required column "
                f"country.{column.name}: add it to seed_candidates()"
            )
    return values


class SeededRows:
    """Rows put in `country` before each step: every step must keep them and their values,
    except what it visibly drops (the table, or a column). Other rows are not watched."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.rows: dict[int, dict] = {}  # id -> the non-NULL values seen so far
        self.seeded = 0

    def table(self) -> Table | None:
        metadata = MetaData()
        metadata.reflect(self.engine, only=lambda name, _: name == "country")
        return metadata.tables.get("country")

    def seed(self, step: str) -> None:
        table = self.table()
        if table is None:
            return
        with self.engine.begin() as conn:
            values = seed_values(table, conn)
            key = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        self.seeded += 1
        self.rows[key] = {}
        self.check(f"seeding {values['alpha2']} before {step}")

    def check(self, step: str) -> None:
        table = self.table()
        if table is None:
            self.rows.clear()  # the step dropped the table: nothing left to keep
            return
        with self.engine.connect() as conn:
            now = {row["id"]: dict(row) for row in conn.execute(select(table)).mappings()}
        lost = sorted(set(self.rows) - set(now))
        assert not lost, f"{step} lost country rows {[self.rows[key] for key in lost]}"
        for key, kept in self.rows.items():
            row = now[key]
            for column in list(kept):
                if column not in row:
                    del kept[column]  # the step dropped the column, and its values with it
                else:
                    assert row[column] == kept[column], (
                        f"{step} changed country {key}.{column}: {kept[column]!r} -> "
                        f"{row[column]!r}"
                    )
            kept.update({column: value for column, value in row.items() if value is not None})


def test_stairway_up_down_up_keeps_schema_and_data(alembic_engine: Engine):
    """For each revision in order: seed a row, upgrade, downgrade, upgrade.

    After the downgrade the schema is exactly what it was before the step (the downgrade
    undoes the upgrade), after the second upgrade it is what the first produced, and rows
    that existed before a step survive all three with their values, unless the step drops
    their table or column.
    """
    cfg = config_for(alembic_engine)
    script = ScriptDirectory.from_config(cfg)
    revisions = revisions_in_order(script)
    assert revisions, "no revisions"
    data = SeededRows(alembic_engine)
    for rev in revisions:
        name = f"{rev.revision} ({rev.doc})"
        if isinstance(rev.down_revision, tuple | list):
            command.upgrade(cfg, rev.revision)  # a merge point: nothing of its own to undo
            continue
        down = rev.down_revision or "base"
        data.seed(name)
        before = schema_snapshot(alembic_engine)

        command.upgrade(cfg, rev.revision)
        assert current_version(alembic_engine) == {rev.revision}
        after = schema_snapshot(alembic_engine)
        data.check(f"upgrade to {name}")

        command.downgrade(cfg, down)
        assert current_version(alembic_engine) == ({down} if rev.down_revision else set())
        diff = schema_diff(before, schema_snapshot(alembic_engine))
        assert not diff, f"downgrade of {name} does not undo its upgrade:\n" + "\n".join(diff)
        data.check(f"downgrade of {name}")

        command.upgrade(cfg, rev.revision)
        diff = schema_diff(after, schema_snapshot(alembic_engine))
        assert not diff, f"upgrading {name} again gives another schema:\n" + "\n".join(diff)
        data.check(f"second upgrade to {name}")
    assert current_version(alembic_engine) == set(script.get_heads())
    assert data.seeded >= 1, "no step had a country table to seed"


# --- racing migrators ----------------------------------------------------------------

RUNNING_UPGRADE = re.compile(r"Running upgrade (\S*) -> (\w+)")


@pytest.mark.parametrize(
    "migrator",
    [("-m", "alembic", "upgrade", "head"), ("-m", "src.migrate")],
    ids=["alembic-upgrade-head", "src.migrate"],
)
def test_racing_migrators_apply_each_revision_once(sync_engine: Engine, migrator):
    """Five migrators start at once on an empty database: all succeed, each revision
    runs exactly once (the advisory lock serialises them), the database ends at head."""
    script = script_directory()
    expected = {rev.revision for rev in script.walk_revisions("base", "heads")}
    with fresh_database(sync_engine) as url:
        env = cli_env(url, MIGRATION_LOCK_WAIT_SECONDS="120")
        procs = [
            subprocess.Popen(
                [sys.executable, *migrator],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(5)
        ]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            outputs.append((proc.returncode, out + err))
        for returncode, output in outputs:
            assert returncode == 0, output
        applied = Counter(
            match[1] for _, output in outputs for match in RUNNING_UPGRADE.findall(output)
        )
        assert set(applied) == expected
        assert all(count == 1 for count in applied.values()), applied
        engine = create_engine(url, poolclass=NullPool)
        try:
            assert current_version(engine) == set(script.get_heads())
        finally:
            engine.dispose()


# --- a failing revision ----------------------------------------------------------------

FAILURES = {
    "raises": 'raise RuntimeError("deliberate failure after some DDL")',
    "bad-sql": 'op.execute("SELECT no_such_function()")',
}


def failing_revision(versions: Path, head: str, table: str, failure: str) -> Path:
    return write_revision(
        versions,
        "f00dfa11babe",
        head,
        "def upgrade() -> None:\n"
        f'    op.add_column("{table}", sa.Column("doomed", sa.Text()))\n'
        '    op.create_table("doomed", sa.Column("id", sa.BigInteger(), primary_key=True))\n'
        '    op.create_index("doomed_id_idx", "doomed", ["id"])\n'
        '    op.execute("INSERT INTO doomed (id) VALUES (1)")\n'
        f"    op.execute(\"UPDATE {table} SET doomed = 'x'\")\n"
        f"    {failure}\n\n\n"
        "def downgrade() -> None:\n"
        '    op.drop_table("doomed")\n'
        f'    op.drop_column("{table}", "doomed")\n',
    )


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_failing_revision_leaves_schema_and_version_as_before(
    sync_engine: Engine, tmp_path: Path, failure: str
):
    """A revision that fails half-way is rolled back whole: schema, data and
    alembic_version are as before. From empty, the revisions before it stay applied."""
    script = script_directory()
    (head,) = script.get_heads()
    scratch = tmp_path / "alembic"
    shutil.copytree(PROJECT_ROOT / "alembic", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    with fresh_database(sync_engine) as at_head_url, fresh_database(sync_engine) as empty_url:
        at_head = create_engine(at_head_url, poolclass=NullPool)
        empty = create_engine(empty_url, poolclass=NullPool)
        try:
            command.upgrade(config_for(at_head), "head")
            good_schema, good_rows = schema_snapshot(at_head), row_counts(at_head)
            table = sorted(good_rows)[0]
            failing_revision(scratch / "versions", head, table, failure)

            with pytest.raises((RuntimeError, DBAPIError), match=r"deliberate|no_such_function"):
                command.upgrade(config_for(at_head, scratch), "head")
            assert current_version(at_head) == {head}
            assert not schema_diff(good_schema, schema_snapshot(at_head))
            assert row_counts(at_head) == good_rows

            with pytest.raises((RuntimeError, DBAPIError), match=r"deliberate|no_such_function"):
                command.upgrade(config_for(empty, scratch), "head")
            assert current_version(empty) == {head}  # one transaction per migration
            assert not schema_diff(good_schema, schema_snapshot(empty))
            assert row_counts(empty) == good_rows
        finally:
            at_head.dispose()
            empty.dispose()


# --- the lock and the timeouts ---------------------------------------------------------


def test_migration_lock_is_exclusive_and_bounded(sync_engine: Engine):
    """Held on one connection (by raw id), a second migration_lock() gives up on time."""
    with fresh_database(sync_engine) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as holder:
                holder.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_ID)))
                started = time.monotonic()
                with pytest.raises(MigrationError, match=r"held the migration lock for over 0\.5s"):
                    with migration_lock(engine, wait_seconds=0.5):
                        pytest.fail("took a lock that another session holds")
                assert 0.5 <= time.monotonic() - started < 3
                holder.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_ID)))
            with migration_lock(engine, wait_seconds=0.5):
                pass  # free again
        finally:
            engine.dispose()


@pytest.mark.parametrize(
    "migrator",
    [("-m", "src.migrate"), ("-m", "alembic", "upgrade", "head")],
    ids=["src.migrate", "alembic-upgrade-head"],
)
def test_second_migrator_fails_fast_with_a_clear_message(sync_engine: Engine, migrator):
    """While the lock is held, a migrator with MIGRATION_LOCK_WAIT_SECONDS=1 gives up
    after about a second with one line that says what to do, and changes nothing."""
    with fresh_database(sync_engine) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with migration_lock(engine, wait_seconds=5):
                started = time.monotonic()
                proc = run_python(
                    *migrator,
                    cwd=PROJECT_ROOT,
                    env=cli_env(url, MIGRATION_LOCK_WAIT_SECONDS="1"),
                    timeout=60,
                )
                elapsed = time.monotonic() - started
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0, output
            assert "another migration has held the migration lock for over 1s" in output
            assert "MIGRATION_LOCK_WAIT_SECONDS" in output
            assert "Traceback" not in output
            assert 1 <= elapsed < 20, elapsed
            assert current_version(engine) == set()
        finally:
            engine.dispose()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes that src.config must see, undone after the test."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


TIMEOUTS = {
    "lock_timeout": (
        "MIGRATION_LOCK_TIMEOUT_MS",
        "op.add_column({table!r}, sa.Column('late', sa.Text()))",
    ),
    "statement_timeout": ("MIGRATION_STATEMENT_TIMEOUT_MS", 'op.execute("SELECT pg_sleep(10)")'),
}


@pytest.mark.parametrize("setting,statement", TIMEOUTS.values(), ids=TIMEOUTS.keys())
def test_migration_timeouts_cancel_a_blocked_or_slow_revision(
    sync_engine: Engine, tmp_path: Path, settings_env: pytest.MonkeyPatch, setting, statement
):
    """A revision stuck behind a lock, or running too long, is cancelled by the
    per-migration timeouts from settings (not left queueing every other query)."""
    script = script_directory()
    (head,) = script.get_heads()
    scratch = tmp_path / "alembic"
    shutil.copytree(PROJECT_ROOT / "alembic", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    with fresh_database(sync_engine) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            command.upgrade(config_for(engine), "head")
            table = sorted(row_counts(engine))[0]
            write_revision(
                scratch / "versions",
                "5104a11e55ed",
                head,
                f"def upgrade() -> None:\n    {statement.format(table=table)}\n\n\n"
                "def downgrade() -> None:\n    pass\n",
            )
            settings_env.setenv(setting, "300")
            get_settings.cache_clear()
            before = schema_snapshot(engine)
            with engine.connect() as reader:
                reader.execute(text(f'LOCK TABLE "{table}" IN ACCESS SHARE MODE'))  # a long read
                started = time.monotonic()
                with pytest.raises(DBAPIError, match="canceling statement due to"):
                    command.upgrade(config_for(engine, scratch), "head")
                assert time.monotonic() - started < 5
                reader.rollback()
            assert current_version(engine) == {head}
            assert not schema_diff(before, schema_snapshot(engine))
        finally:
            engine.dispose()


# --- the README's walkthrough, in a scratch copy of the project -------------------------


def add_to_country_model(models: Path, line: str) -> None:
    source = models.read_text()
    anchor = '    __tablename__ = "country"\n'
    assert anchor in source, "src/models.py has no Country model to extend"
    models.write_text(source.replace(anchor, anchor + line + "\n", 1))
    if "String" not in source.split("class ", 1)[0]:
        models.write_text("from sqlalchemy import String\n" + models.read_text())


def test_autogenerate_walkthrough_and_rename_guard(sync_engine: Engine, tmp_path: Path):
    """README's workflow, for real: nothing to do → add a column → autogenerate → up →
    down; then a rename is refused by the guard, unless explicitly allowed."""
    project = copy_project(tmp_path / "project")
    versions = project / "alembic" / "versions"
    models = project / "src" / "models.py"
    with fresh_database(sync_engine) as url:
        env = cli_env(url)

        def alembic(*args: str, **extra: str):
            return run_python("-m", "alembic", *args, cwd=project, env={**env, **extra})

        def new_files(before: set[Path]) -> list[Path]:
            return sorted(set(versions.glob("*.py")) - before)

        def columns() -> set[str]:
            engine = create_engine(url, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    return set(
                        conn.scalars(
                            text(
                                "SELECT column_name FROM information_schema.columns "
                                "WHERE table_name = 'country'"
                            )
                        )
                    )
            finally:
                engine.dispose()

        assert alembic("upgrade", "head").returncode == 0
        files = set(versions.glob("*.py"))

        proc = alembic("revision", "--autogenerate", "-m", "nothing")
        assert proc.returncode == 0, proc.stderr
        assert "No schema changes detected: no revision written." in proc.stdout
        assert new_files(files) == []

        add_to_country_model(
            models, "    walkthrough_capital: Mapped[str | None] = mapped_column(String(100))"
        )
        proc = alembic("revision", "--autogenerate", "-m", "add capital")
        assert proc.returncode == 0, proc.stderr
        (revision_file,) = new_files(files)
        source = revision_file.read_text()
        assert "op.add_column" in source and "walkthrough_capital" in source
        assert "\t" not in source and source.endswith("\n")  # ruff formatted it

        assert alembic("upgrade", "head").returncode == 0
        assert "walkthrough_capital" in columns()
        proc = alembic("downgrade", "-1")
        assert proc.returncode == 0, proc.stderr
        assert "walkthrough_capital" not in columns()
        assert alembic("upgrade", "head").returncode == 0

        models.write_text(models.read_text().replace("walkthrough_capital", "walkthrough_city"))
        files = set(versions.glob("*.py"))
        proc = alembic("revision", "--autogenerate", "-m", "rename capital")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "refusing to write a revision that drops and adds columns" in output
        assert "alter_column" in output and "new_column_name" in output
        assert "walkthrough_capital" in output and "walkthrough_city" in output
        assert "Traceback" not in output
        assert new_files(files) == []

        proc = alembic("-x", "allow_drop_add=1", "revision", "--autogenerate", "-m", "drop add")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        allowed.unlink()

        proc = alembic("revision", "--autogenerate", "-m", "drop add", ALEMBIC_ALLOW_DROP_ADD="1")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        source = allowed.read_text()
        assert "op.drop_column" in source and "op.add_column" in source

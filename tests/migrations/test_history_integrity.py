"""History integrity (alembic-pg-guard): a revision inserted below what the database has
applied, or one removed, is refused by migrate and /ready, naming it; a database
migrated before the fingerprints existed gets them backfilled, not refused."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic_pg_guard import HISTORY_TABLE, GuardError, run_gates
from asgi_lifespan import LifespanManager
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from devtools.embedded_pg import free_port
from src.config import Settings
from src.main import create_app
from src.migrations import alembic_config
from tests.helpers import (
    APP_ROLE,
    APP_ROLE_PASSWORD,
    asgi_client,
    child_env,
    copy_project,
    current_version,
    fresh_engine,
    one_line_failure,
    run_python,
    scratch_config,
    script_directory,
    upgrade,
    url_string,
    wait_for,
    write_revision,
    write_revision_on_head,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

INSERTED = "1a5e27ed0001"


def insert_mid_chain(versions: Path) -> tuple[str, str]:
    """A revision slipped in under the head: the head's down_revision re-pointed at it."""
    script = script_directory()
    (head,) = script.get_heads()
    below = script.get_revision(head).down_revision
    assert isinstance(below, str)
    write_revision(
        versions,
        INSERTED,
        below,
        "def upgrade() -> None:\n"
        '    op.add_column("country", sa.Column("sneaky", sa.Text()))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("country", "sneaky")\n',
    )
    (path,) = versions.glob(f"*{head}*.py")
    source = path.read_text()
    old = f'None = "{below}"'
    assert old in source
    path.write_text(source.replace(old, f'None = "{INSERTED}"'))
    return head, below


def columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("country")}


def test_revision_inserted_below_the_head_is_refused_by_migrate_and_ready(
    settings: Settings, sync_engine: Engine, tmp_path: Path
):
    """The database applied the real history; a copy of the project then gets a revision
    inserted mid-chain. `python -m alembic_pg_guard migrate` (what start and Docker run)
    fails in one line naming it, changes nothing, and the copy's API answers /ready 503."""
    with fresh_engine(sync_engine) as (url, engine):
        upgrade(settings.for_database(url))
        project = copy_project(tmp_path / "project")
        head, _ = insert_mid_chain(project / "alembic" / "versions")

        proc = run_python("-m", "alembic_pg_guard", "migrate", cwd=project, env=child_env(url))
        line = one_line_failure(proc)
        assert f"history edited: revision {INSERTED}" in line, line
        assert f"below the database's head {head}" in line, line
        assert "Traceback" not in proc.stdout + proc.stderr
        assert current_version(engine) == {head}
        assert "sneaky" not in columns(engine)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "src.main:app", "--port", str(port)],
            cwd=project,
            env=child_env(url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", server)
            ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        finally:
            server.terminate()
            server.wait(timeout=10)
        assert ready.status_code == 503, ready.text
        assert f"history edited: revision {INSERTED}" in ready.json()["detail"]


async def test_revision_removed_below_the_head_is_refused(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """The database applied a history with one more revision than the code's (then
    removed from alembic/versions): the project's migrate and /ready name the head that
    now follows another revision."""
    head, below = insert_mid_chain(scratch_alembic / "versions")
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        scratch = scratch_config(fresh, scratch_alembic)
        upgrade(fresh, cfg=scratch)
        assert "sneaky" in columns(engine)

        with pytest.raises(GuardError) as refused:
            upgrade(fresh)
        message = str(refused.value)
        assert f"revision {head}" in message and f"now follows {below}" in message
        assert f"applied it after {INSERTED}" in message
        assert "\n" not in message

        async with LifespanManager(create_app(fresh)) as manager:
            async with asgi_client(manager.app) as client:
                ready = await client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert f"revision {head}" in ready.json()["detail"]


def test_database_migrated_before_fingerprints_is_backfilled(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """No fingerprint table (migrated by the code before this check): migrate records
    the history as it is instead of refusing; an edit after that is caught, by migrate
    and by the `history` gate. The API's role may read the table (for /ready), not write it."""
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        upgrade(fresh)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {HISTORY_TABLE}")
        done = upgrade(fresh)
        assert "recorded its history" in done, done
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT revision, state, note FROM {HISTORY_TABLE}"))
            recorded = {r.revision: (r.state, r.note) for r in rows}
        expected = {r.revision for r in script_directory().walk_revisions()}
        assert recorded == {rev: ("applied", "backfilled") for rev in expected}
        assert upgrade(fresh).startswith("database already at head")

        insert_mid_chain(scratch_alembic / "versions")
        scratch = scratch_config(fresh, scratch_alembic)
        with pytest.raises(GuardError, match=f"revision {INSERTED}"):
            upgrade(fresh, cfg=scratch)
        # The gate, on the configured database (here the fresh one): one line.
        (problem,) = run_gates("history", scratch)
        assert problem.startswith(f"history: history edited: revision {INSERTED}"), problem

        app_url = make_app_url(url_string(url))
        app = create_engine(app_url, poolclass=NullPool)
        try:
            with app.connect() as conn:
                assert conn.scalar(text(f"SELECT count(*) FROM {HISTORY_TABLE}")) == len(expected)
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text(f"DELETE FROM {HISTORY_TABLE}"))
        finally:
            app.dispose()


def make_app_url(owner_url: str) -> str:
    return url_string(make_url(owner_url).set(username=APP_ROLE, password=APP_ROLE_PASSWORD))


def test_revision_applied_by_offline_sql_on_top_is_recorded_not_refused(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """A DBA applies the newest revision from `alembic upgrade --sql` output: the runner
    then finds it without a row but with nothing recorded above it, and records it."""
    offline = "0ff1e0000001"
    write_revision_on_head(
        scratch_alembic / "versions",
        offline,
        "def upgrade() -> None:\n"
        '    op.add_column("country", sa.Column("offline", sa.Text()))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("country", "offline")\n',
    )
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        scratch = scratch_config(fresh, scratch_alembic)
        upgrade(fresh)
        with engine.begin() as conn:  # what the DBA's script does
            conn.exec_driver_sql("ALTER TABLE country ADD COLUMN offline TEXT")
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": offline})
        done = upgrade(fresh, cfg=scratch)
        assert done.startswith(f"database already at {offline}; recorded its history"), done
        with engine.connect() as conn:
            note = conn.scalar(
                text(f"SELECT note FROM {HISTORY_TABLE} WHERE revision = :r"), {"r": offline}
            )
        assert note == "backfilled"
        assert upgrade(fresh, cfg=scratch).startswith("database already at head")


async def test_stamped_head_is_refused_by_migrate_ready_and_the_gate_until_applied(
    settings: Settings, sync_engine: Engine
):
    """`alembic stamp head` instead of an upgrade (issue 22, #2): was "already at head",
    history ok and /ready 200 with the head's changes missing. Now each names the stamped
    revision in one line; stamping back and migrating applies it."""
    script = script_directory()
    (head,) = script.get_heads()
    below = script.get_revision(head).down_revision
    assert isinstance(below, str)
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        upgrade(fresh, below)
        command.stamp(alembic_config(fresh), "head")
        assert current_version(engine) == {head}

        with pytest.raises(GuardError) as refused:
            upgrade(fresh)
        line = str(refused.value)
        assert line.startswith(f"revision {head} (") and "was stamped, not applied" in line, line
        assert f"`pipenv run alembic stamp {below}`, then migrate again" in line, line
        assert "`pipenv run migrate-verify`" in line, line
        assert run_gates("history", alembic_config(fresh)) == [f"history: {line}"]
        async with LifespanManager(create_app(fresh)) as manager:
            async with asgi_client(manager.app) as client:
                ready = await client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["detail"] == line

        command.stamp(alembic_config(fresh), below)
        assert upgrade(fresh).startswith(f"database upgraded from {below} to {head}")
        async with LifespanManager(create_app(fresh)) as manager:
            async with asgi_client(manager.app) as client:
                assert (await client.get("/ready")).status_code == 200


def test_edited_applied_revision_is_refused_and_reformatting_is_not(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """Every revision reformatted (ruff format, another line length) is no change; an index
    added to an applied revision is (issue 22, #3): migrate and the gate refuse it."""
    versions = scratch_alembic / "versions"
    ruff = Path(sys.executable).with_name("ruff")
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        scratch = scratch_config(fresh, scratch_alembic)
        upgrade(fresh)
        reformat = [str(ruff), "format", "--line-length", "60", "--quiet", str(versions)]
        subprocess.run(reformat, check=True)
        assert upgrade(fresh, cfg=scratch).startswith("database already at head")

        (path,) = versions.glob("*_5e0c05eee4c6_*.py")
        source = path.read_text()
        path.write_text(
            source.replace(
                "def downgrade",
                'op.create_index("subdivision_code_extra", "subdivision", ["code"])\n\n\n'
                "def downgrade",
                1,
            ).replace("\nop.create_index", "\n    op.create_index", 1)
        )
        with pytest.raises(GuardError) as refused:
            upgrade(fresh, cfg=scratch)
        line = str(refused.value)
        assert line.startswith(
            "revision 5e0c05eee4c6 (validate subdivision parent fk) was changed after it was "
            "applied to this database"
        ), line
        assert run_gates("history", scratch) == [f"history: {line}"]
        assert "subdivision_code_extra" not in {
            i["name"] for i in inspect(engine).get_indexes("subdivision")
        }

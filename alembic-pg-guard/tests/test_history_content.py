"""History integrity beyond the chain (issue 22, #2 and #3), on a real PostgreSQL: an applied
revision edited afterwards, and a revision only stamped, are refused by the runner, the
readiness probe and the history gate, in one line, until verified or really applied."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from alembic_pg_guard import (
    HISTORY_TABLE,
    GuardError,
    GuardSettings,
    attach,
    code_history,
    db_heads,
    load_config,
    ready_problem,
    run_gates,
    upgrade,
)
from alembic_pg_guard._fingerprint import fingerprint
from alembic_pg_guard._steps import revision_failure
from alembic_pg_guard._verify import verify
from guard_helpers import CREATE_GADGET, MODELS, Project, clean_env, make_project
from sqlalchemy import URL, Engine, inspect, text

FIRST = (
    '''"""gadget"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


'''
    + CREATE_GADGET
)

# The same revision as a careless formatter and a commenter leave it: not a change.
FIRST_REFORMATTED = """\"\"\"gadget: the first table

Reworded docstring.
\"\"\"
from alembic import op
import sqlalchemy as sa
revision: str = 'aaaa00000001'
down_revision = None
def upgrade() -> None:
    # one table
    op.create_table('gadget', sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True,),
                    sa.Column('name', sa.Text(), nullable=False))
def downgrade() -> None:
    \"\"\"Undo.\"\"\"
    op.drop_table('gadget')
"""

# The edit issue 22 describes: a backfill and an index added to an applied revision.
EDITED = FIRST.replace(
    "    )\n\n\ndef downgrade",
    '    )\n    op.execute("UPDATE gadget SET name = lower(name)")\n'
    '    op.create_index("gadget_name", "gadget", ["name"])\n\n\ndef downgrade',
)

SECOND = '''"""gadget note"""

import sqlalchemy as sa
from alembic import op

revision = "bbbb00000002"
down_revision = "aaaa00000001"


def upgrade():
    op.add_column("gadget", sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("gadget", "note")
'''
MODELS_WITH_NOTE = MODELS.replace(
    "name: Mapped[str] = mapped_column(Text)\n",
    "name: Mapped[str] = mapped_column(Text)\n    note: Mapped[str | None] = mapped_column(Text)\n",
)


@pytest.fixture
def project(tmp_path: Path, database: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The README's project with FIRST, run in-process (its models importable)."""
    project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    yield project


def config(project: Project) -> Config:
    """A new Config each time: it reads the revision files (and the models) afresh."""
    sys.modules.pop("models", None)
    return attach(load_config(project.root / "alembic.ini"), GuardSettings(url=project.url))


def probe(engine: Engine, cfg: Config) -> str | None:
    """What the app's /ready asks: at the code's heads, did it apply the code's history?"""
    code = code_history(cfg)
    with engine.connect() as conn:
        return ready_problem(conn, code, db_heads(conn))


def rows(engine: Engine) -> set[tuple]:
    with engine.connect() as conn:
        found = conn.execute(
            text(f"SELECT revision, note, content_hash, recorded_at FROM {HISTORY_TABLE}")
        )
        return {tuple(r) for r in found}


def test_fingerprint_ignores_formatting_and_sees_operations(tmp_path: Path):
    """ruff format, comments, docstrings, quotes and imports are not a change; a statement is."""
    paths = {}
    for name, source in {
        "first": FIRST,
        "reformatted": FIRST_REFORMATTED,
        "edited": EDITED,
    }.items():
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(source)
    formatted = tmp_path / "formatted.py"
    formatted.write_text(FIRST_REFORMATTED)
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.exists():
        subprocess.run([str(ruff), "format", "-q", str(formatted)], check=True)
        assert formatted.read_text() != FIRST_REFORMATTED
    first = fingerprint(paths["first"])
    assert first is not None
    assert fingerprint(paths["reformatted"]) == first
    assert fingerprint(formatted) == first
    assert fingerprint(paths["edited"]) != first


def test_an_applied_revision_edited_afterwards_is_refused_until_verified(
    project: Project, engine: Engine
):
    """Adding a backfill and an index to an applied revision: migrate, /ready and the history
    gate refuse it in one line, nothing changes; a reformatting is no change at all."""
    assert upgrade(config(project)).startswith("database upgraded from empty")
    revision_file = project.versions / "aaaa00000001_gadget.py"
    revision_file.write_text(FIRST_REFORMATTED)
    assert upgrade(config(project)).startswith("database already at head")
    assert probe(engine, config(project)) is None

    revision_file.write_text(EDITED)
    before = rows(engine)
    with pytest.raises(GuardError) as refused:
        upgrade(config(project))
    line = str(refused.value)
    assert "\n" not in line, line
    assert line.startswith(
        "revision aaaa00000001 (gadget) was changed after it was applied to this database"
    ), line
    assert "put the change in a new revision" in line, line
    assert "python -m alembic_pg_guard verify" in line, line
    assert probe(engine, config(project)) == line
    assert run_gates("history", config(project)) == [f"history: {line}"]
    with pytest.raises(CommandError, match="was changed after it was applied"):
        command.upgrade(config(project), "head")  # plain alembic upgrade, nothing to run
    (project.versions / "bbbb00000002_note.py").write_text(SECOND)  # a pending revision
    with pytest.raises(CommandError, match="was changed after it was applied"):
        command.upgrade(config(project), "head")  # plain alembic upgrade, through env.py
    assert "note" not in {c["name"] for c in inspect(engine).get_columns("gadget")}
    (project.versions / "bbbb00000002_note.py").unlink()
    assert rows(engine) == before
    assert inspect(engine).get_indexes("gadget") == []

    # A deliberate edit whose effect the database has (the schema matches the models).
    assert verify(config(project)).startswith("verified: the schema matches the models")
    assert upgrade(config(project)).startswith("database already at head")
    assert probe(engine, config(project)) is None
    assert run_gates("history", config(project)) == []


def test_a_database_fingerprinted_before_content_hashes_is_backfilled_not_refused(
    project: Project, engine: Engine
):
    """A history table from before content fingerprints (no column), and revisions edited
    since they ran: the first run records them as they are now; a later edit is caught."""
    upgrade(config(project))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {HISTORY_TABLE} DROP COLUMN content_hash")
    (project.versions / "aaaa00000001_gadget.py").write_text(EDITED)
    assert probe(engine, config(project)) is None  # the API's read: nothing to compare yet
    assert run_gates("history", config(project)) == []

    done = upgrade(config(project))
    assert done.startswith("database already at aaaa00000001; recorded its history"), done
    ((_, note, content, _),) = rows(engine)
    assert note is None and content == fingerprint(project.versions / "aaaa00000001_gadget.py")
    assert upgrade(config(project)).startswith("database already at head")

    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    with pytest.raises(GuardError, match="was changed after it was applied"):
        upgrade(config(project))


def add_second(project: Project) -> None:
    (project.versions / "bbbb00000002_note.py").write_text(SECOND)
    (project.root / "models.py").write_text(MODELS_WITH_NOTE)


def test_a_stamped_revision_is_refused_until_really_applied(project: Project, engine: Engine):
    """`alembic stamp head` instead of an upgrade: the column is missing, so migrate, /ready
    and the gate refuse it, naming it; verify finds the difference and records nothing;
    stamping back and migrating applies it."""
    upgrade(config(project))
    add_second(project)
    command.stamp(config(project), "head")
    assert {c["name"] for c in inspect(engine).get_columns("gadget")} == {"id", "name"}

    with pytest.raises(GuardError) as refused:
        upgrade(config(project))
    line = str(refused.value)
    assert "\n" not in line, line
    assert line.startswith("revision bbbb00000002 (gadget note) was stamped, not applied"), line
    assert "`alembic stamp aaaa00000001`, then migrate again" in line, line
    assert "python -m alembic_pg_guard verify" in line, line
    assert probe(engine, config(project)) == line
    assert run_gates("history", config(project)) == [f"history: {line}"]

    before = rows(engine)
    with pytest.raises(GuardError) as unverified:
        verify(config(project))
    assert str(unverified.value).startswith(
        "the database does not match the models at head (add_column gadget.note)"
    ), unverified.value
    assert rows(engine) == before

    command.stamp(config(project), "aaaa00000001")
    assert "upgraded from aaaa00000001 to bbbb00000002" in upgrade(config(project))
    assert "note" in {c["name"] for c in inspect(engine).get_columns("gadget")}
    assert probe(engine, config(project)) is None
    assert run_gates("history", config(project)) == []


def test_an_adopted_database_is_stamped_then_verified(project: Project, engine: Engine):
    """A database whose schema was made by hand: stamp it, verify it, then it migrates."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE gadget (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "name text NOT NULL)"
        )
    command.stamp(config(project), "head")
    with pytest.raises(GuardError, match=r"^revision aaaa00000001 \(gadget\) was stamped"):
        upgrade(config(project))

    done = verify(config(project))
    assert done == (
        "verified: the schema matches the models; recorded as applied as they are now: "
        "aaaa00000001 (gadget)"
    )
    assert upgrade(config(project)).startswith("database already at head")
    assert probe(engine, config(project)) is None
    add_second(project)
    assert "upgraded from aaaa00000001 to bbbb00000002" in upgrade(config(project))


@pytest.mark.slow
def test_the_command_line_refuses_a_stamp_in_one_line_and_verify_a_mismatch(
    tmp_path: Path, database: URL
):
    """`python -m alembic_pg_guard migrate`, `check history` and `verify` (the schema lacks
    the stamped table): `error: <line>`, exit 1."""
    project = make_project(tmp_path / "cli", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    with_url = ["-c", str(project.root / "alembic.ini")]
    assert project.alembic("stamp", "head").returncode == 0
    migrate = project.guard(*with_url, "migrate")
    assert migrate.returncode == 1, migrate.stdout + migrate.stderr
    assert migrate.stderr.startswith("error: revision aaaa00000001 (gadget) was stamped"), (
        migrate.stderr
    )
    assert len(migrate.stderr.strip().splitlines()) == 1, migrate.stderr
    gate = project.guard(*with_url, "check", "history")
    assert gate.returncode == 1 and gate.stderr.startswith("error: history: revision aaaa"), (
        gate.stderr
    )
    refused = project.guard(*with_url, "verify")
    assert refused.returncode == 1
    # Alembic's own INFO lines first (the project's env.py sets its logging), then one line.
    assert refused.stderr.splitlines()[-1].startswith(
        "error: the database does not match the models at head (add_table gadget"
    ), refused.stderr


def test_an_edited_revision_can_be_undone_and_applied_again(project: Project, engine: Engine):
    """The development loop: apply, edit, downgrade, upgrade. The downgrade is allowed (it
    undoes the revision), and the upgrade records the file as it is now."""
    upgrade(config(project))
    (project.versions / "aaaa00000001_gadget.py").write_text(EDITED)
    command.downgrade(config(project), "base")
    assert not inspect(engine).has_table("gadget")
    assert upgrade(config(project)).startswith("database upgraded from empty")
    assert [i["name"] for i in inspect(engine).get_indexes("gadget")] == ["gadget_name"]
    assert probe(engine, config(project)) is None
    assert upgrade(config(project)).startswith("database already at head")


# The edit with its downgrade edited too: the new downgrade drops what the old upgrade never made.
EDITED_BOTH_WAYS = EDITED.replace(
    '    op.drop_table("gadget")', '    op.drop_index("gadget_name")\n    op.drop_table("gadget")'
)
MODELS_WITH_INDEX = (
    MODELS.replace(
        "from sqlalchemy import BigInteger, Identity, Text",
        "from sqlalchemy import BigInteger, Identity, Index, Text",
    )
    + '\n    __table_args__ = (Index("gadget_name", "name"),)\n'
)


def test_a_failing_downgrade_of_an_edited_revision_says_why_and_what_to_do(
    project: Project, engine: Engine
):
    upgrade(config(project))
    (project.versions / "aaaa00000001_gadget.py").write_text(EDITED_BOTH_WAYS)
    with pytest.raises(Exception) as failed:
        command.downgrade(config(project), "base")
    line = revision_failure(failed.value)
    assert line is not None and line.startswith(
        "the downgrade of revision aaaa00000001 (gadget) failed, and was rolled back: the "
        'database stays at that revision: UndefinedObject: index "gadget_name" does not exist'
    ), line
    assert line.endswith(
        "its file changed since it was applied, so this downgrade undoes the edited upgrade, "
        "not the one that ran: put the applied version back (git stash), downgrade, then "
        "restore the edit and migrate; or let the new downgrade steps tolerate the old schema "
        "(if_exists=True)"
    ), line
    assert inspect(engine).has_table("gadget")


def test_verify_says_how_to_apply_an_edit_the_database_lacks(project: Project, engine: Engine):
    upgrade(config(project))
    (project.versions / "aaaa00000001_gadget.py").write_text(EDITED)
    (project.root / "models.py").write_text(MODELS_WITH_INDEX)
    with pytest.raises(GuardError) as refused:
        verify(config(project))
    assert str(refused.value) == (
        "the database does not match the models at head (add_index gadget_name on gadget), "
        "so nothing was verified: apply the edited aaaa00000001 (gadget) as it is now "
        "(`alembic downgrade base`, then migrate) or restore its file as it was applied, or "
        "fix the schema by hand, then verify again"
    )


THIRD = (
    SECOND.replace('"""gadget note"""', '"""gadget colour"""')
    .replace('revision = "bbbb00000002"', 'revision = "cccc00000003"')
    .replace('"note"', '"colour"')
)


def test_ready_when_the_database_is_ahead_along_the_codes_history(project: Project, engine: Engine):
    """A rolling deploy: the new release applied bbbb, the old code (aaaa only) still runs.
    Ready while the database's history leads from the code's head to its own; not when
    that history diverged, the database is behind, or the code's revision was edited."""
    add_second(project)
    upgrade(config(project))
    second = project.versions / "bbbb00000002_note.py"
    second.unlink()
    assert probe(engine, config(project)) is None

    third = project.versions / "cccc00000003_colour.py"
    third.write_text(THIRD)  # the code's own cccc on aaaa: the database's bbbb is not below it
    diverged = probe(engine, config(project))
    assert diverged is not None and "\n" not in diverged
    assert diverged.startswith(
        "schema mismatch: database at bbbb00000002, code expects cccc00000003 (diverged"
    ), diverged

    second.write_text(SECOND)
    third.write_text(
        THIRD.replace('down_revision = "aaaa00000001"', 'down_revision = "bbbb00000002"')
    )
    assert probe(engine, config(project)) == (
        "schema mismatch: database at bbbb00000002, code expects cccc00000003 "
        "(behind: run `python -m alembic_pg_guard migrate`)"
    )

    second.unlink()
    third.unlink()
    (project.versions / "aaaa00000001_gadget.py").write_text(EDITED)
    edited = probe(engine, config(project))
    assert edited is not None and edited.startswith(
        "revision aaaa00000001 (gadget) was changed after it was applied"
    ), edited


def test_a_stamped_revision_above_the_codes_head_is_not_ready(project: Project, engine: Engine):
    """The newer release stamped bbbb instead of applying it: the old code refuses it too."""
    upgrade(config(project))
    add_second(project)
    command.stamp(config(project), "head")
    (project.versions / "bbbb00000002_note.py").unlink()
    stamped = probe(engine, config(project))
    assert stamped is not None and stamped.startswith(
        "revision bbbb00000002, above the code's head, was stamped, not applied"
    ), stamped

"""One revision's offline SQL, statement by statement (devtools.revision_sql): the source
line of each statement and whether it runs in a transaction or in autocommit."""

from pathlib import Path

from alembic.script import ScriptDirectory

from devtools.revision_sql import render, revision_range
from src.config import Settings
from src.migrate import alembic_config


def revision(settings: Settings, rev: str):
    cfg = alembic_config(settings)
    return cfg, ScriptDirectory.from_config(cfg).get_revision(rev)


def test_offline_sql_per_revision_carries_the_timeouts_and_not_alembics_table(
    settings: Settings,
):
    cfg = alembic_config(settings)
    script = ScriptDirectory.from_config(cfg)
    first = next(rev for rev in script.walk_revisions() if rev.down_revision is None)
    sql = render(cfg, first, "upgrade").lint_sql()
    assert sql.startswith("SET lock_timeout = ")
    assert "SET statement_timeout = " in sql
    assert "CREATE TABLE alembic_version" not in sql
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{first.revision}')" in sql
    assert revision_range(first, "downgrade") == f"{first.revision}:base"


def test_each_statement_knows_its_op_call_and_whether_it_runs_in_a_transaction(
    settings: Settings,
):
    """4846b796fdab: CREATE EXTENSION in the revision's transaction, then the index builds
    in an autocommit_block(); Alembic's own statements are bookkeeping."""
    cfg, rev = revision(settings, "4846b796fdab")
    source = Path(rev.path).read_text().splitlines()
    rendered = render(cfg, rev, "upgrade")
    own = [(s.sql.split(" ")[0:3], s.in_transaction) for s in rendered.own]
    assert own[0] == (["CREATE", "EXTENSION", "IF"], True)
    assert all(not in_tx for _, in_tx in own[1:]) and len(own) == 5
    for statement in rendered.own:
        call = source[statement.source_line - 1].strip()
        first_word = statement.sql.split()[0]
        expected = {"CREATE": ("op.execute(", "op.create_index("), "DROP": ("op.drop_index(",)}
        assert call.startswith(expected[first_word]), (statement.sql, call)
    lines = rendered.sql.splitlines()
    for statement in rendered.statements:  # SQL line numbers point into the rendered SQL
        assert lines[statement.line - 1] == statement.sql.splitlines()[0]
    assert any("alembic_version" in s.sql and s.bookkeeping for s in rendered.statements)

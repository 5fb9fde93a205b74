"""One revision's offline SQL, statement by statement (_revision_sql): the source line of
each statement and whether it runs in a transaction or in autocommit."""

import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from alembic_pg_guard import GuardSettings, attach, load_config
from alembic_pg_guard._revision_sql import render, revision_range
from guard_helpers import Project, clean_env, make_project
from sqlalchemy import URL

# An extension in the revision's transaction, then index builds in an autocommit_block().
MIXED = '''"""mixed"""

from alembic import op

revision = "bbbb00000002"
down_revision = "aaaa00000001"


def upgrade():
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.get_context().autocommit_block():
        op.drop_index(
            "gadget_name_idx", table_name="gadget", postgresql_concurrently=True, if_exists=True
        )
        op.create_index("gadget_name_idx", "gadget", ["name"], postgresql_concurrently=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index("gadget_name_idx", table_name="gadget", postgresql_concurrently=True)
'''
FIRST = '''"""gadget"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


def upgrade():
    op.create_table("gadget", sa.Column("id", sa.BigInteger(), primary_key=True),
                    sa.Column("name", sa.Text()))


def downgrade():
    op.drop_table("gadget")
'''


@pytest.fixture
def script(tmp_path: Path, database: URL, monkeypatch: pytest.MonkeyPatch):
    project: Project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_gadget.py").write_text(FIRST)
    (project.versions / "bbbb00000002_mixed.py").write_text(MIXED)
    # env.py imports models.py: this project's, whatever another test imported before.
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    cfg = attach(load_config(project.root / "alembic.ini"), GuardSettings(lock_timeout_ms=1234))
    return cfg, ScriptDirectory.from_config(cfg)


def test_offline_sql_per_revision_carries_the_timeouts_and_not_alembics_table(script):
    cfg, scripts = script
    first = scripts.get_revision("aaaa00000001")
    sql = render(cfg, first, "upgrade").lint_sql()
    assert sql.startswith("SET lock_timeout = 1234")
    assert "SET statement_timeout = " in sql
    assert "CREATE TABLE alembic_version" not in sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('aaaa00000001')" in sql
    assert revision_range(first, "downgrade") == "aaaa00000001:base"


def test_each_statement_knows_its_op_call_and_whether_it_runs_in_a_transaction(script):
    cfg, scripts = script
    rev = scripts.get_revision("bbbb00000002")
    source = Path(rev.path).read_text().splitlines()
    rendered = render(cfg, rev, "upgrade")
    own = [(s.sql.split(" ")[0:3], s.in_transaction) for s in rendered.own]
    assert own[0] == (["CREATE", "EXTENSION", "IF"], True)
    assert all(not in_tx for _, in_tx in own[1:]) and len(own) == 3
    for statement in rendered.own:
        call = source[statement.source_line - 1].strip()
        first_word = statement.sql.split()[0]
        expected = {"CREATE": ("op.execute(", "op.create_index("), "DROP": ("op.drop_index(",)}
        assert call.startswith(expected[first_word]), (statement.sql, call)
    lines = rendered.sql.splitlines()
    for statement in rendered.statements:  # SQL line numbers point into the rendered SQL
        assert lines[statement.line - 1] == statement.sql.splitlines()[0]
    assert any("alembic_version" in s.sql and s.bookkeeping for s in rendered.statements)

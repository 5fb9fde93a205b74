"""What the squawk gate adds to squawk (_squawk_rules): fixes that never leave an
INVALID index, and the varchar widening, shown on PostgreSQL to rewrite nothing."""

from pathlib import Path

import pytest
from alembic_pg_guard import _squawk_rules as squawk_rules
from sqlalchemy import Engine, text

STATEMENTS = {
    "CREATE INDEX gadget_name_idx ON gadget (name);",
    "CREATE INDEX CONCURRENTLY gadget_name_idx ON gadget (name);",
    "DROP INDEX gadget_name_idx;",
    "ALTER TABLE gadget ADD CONSTRAINT gadget_code_key UNIQUE (code);",
    "ALTER TABLE gadget ADD COLUMN weight BIGINT NOT NULL;",
    "ALTER TABLE gadget ALTER COLUMN weight SET NOT NULL;",
}


@pytest.mark.parametrize("rule", sorted({*squawk_rules.FIXES, "prefer-robust-stmts"}))
def test_no_fix_recommends_if_not_exists(rule: str):
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index: IF NOT EXISTS would then
    skip the build and record success."""
    for sql in STATEMENTS:
        fix = squawk_rules.fix_for(rule, sql) or ""
        assert "if_not_exists" not in fix.lower(), (rule, fix)
        assert "IF NOT EXISTS" not in fix or "would keep" in fix, (rule, fix)


def test_concurrent_index_fixes_drop_the_invalid_leftover_first():
    sql = "CREATE INDEX CONCURRENTLY gadget_name_idx ON gadget (name);"
    for rule in ("require-concurrent-index-creation", "prefer-robust-stmts"):
        fix = squawk_rules.fix_for(rule, sql)
        drop = fix.index(
            'op.drop_index("gadget_name_idx", table_name="gadget", '
            "postgresql_concurrently=True, if_exists=True)"
        )
        assert drop < fix.index('op.create_index("gadget_name_idx", "gadget"')
        assert "autocommit_block()" in fix


def revision_with(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "rev.py"
    path.write_text(
        f'def upgrade():\n    op.alter_column("gadget", "code", existing_type={old}, type_={new})\n'
    )
    return path


def relfilenode(conn) -> int:
    return conn.scalar(text("SELECT relfilenode FROM pg_class WHERE relname = 'gadget'"))


@pytest.mark.parametrize(
    "old,new,old_sql,sql_type,widening",
    [
        ("sa.String(length=100)", "sa.String(length=200)", "VARCHAR(100)", "VARCHAR(200)", True),
        ("sa.String(100)", "sa.Text()", "VARCHAR(100)", "TEXT", True),
        ("sa.String(100)", "sa.String()", "VARCHAR(100)", "VARCHAR", True),
        ("sa.String(length=200)", "sa.String(length=100)", "VARCHAR(200)", "VARCHAR(100)", False),
        ("sa.Text()", "sa.String(length=100)", "TEXT", "VARCHAR(100)", False),
    ],
)
def test_a_varchar_widening_rewrites_nothing_on_postgresql_and_only_it_is_exempt(
    tmp_path: Path, engine: Engine, old, new, old_sql, sql_type, widening
):
    """The exemption is PostgreSQL's behaviour: a widening keeps the table's file (no
    rewrite); a narrowing or text -> varchar(n) writes a new one."""
    sql = f"ALTER TABLE gadget ALTER COLUMN code TYPE {sql_type};"
    path = revision_with(tmp_path, old, new)
    assert squawk_rules.is_varchar_widening(path, 2, sql) is widening
    assert not squawk_rules.is_varchar_widening(path, 1, sql)  # not the alter_column line

    old_sql = (
        "TEXT"
        if old.startswith("sa.Text")
        else f"VARCHAR({old.split('(')[1].split(')')[0].split('=')[-1]})"
    )
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE gadget (id bigint PRIMARY KEY, code {old_sql})"))
        conn.execute(text("INSERT INTO gadget SELECT i, 'x' FROM generate_series(1, 100) i"))
        before = relfilenode(conn)
        conn.execute(text(sql))
        rewritten = relfilenode(conn) != before
    assert rewritten is not widening


def test_a_unique_constraint_is_never_told_to_be_not_valid():
    """PostgreSQL rejects NOT VALID on UNIQUE: the fix is the concurrent index instead."""
    sql = "ALTER TABLE gadget ADD CONSTRAINT gadget_code_key UNIQUE (code);"
    fix = squawk_rules.fix_for("constraint-missing-not-valid", sql) or ""
    assert "not_valid" not in fix and "UNIQUE USING INDEX" in fix, fix
    check = "ALTER TABLE gadget ADD CONSTRAINT gadget_n_check CHECK (n > 0);"
    assert "postgresql_not_valid=True" in squawk_rules.fix_for(
        "constraint-missing-not-valid", check
    )


def test_fixes_name_constraints_as_written():
    """op.f(): a plain name would be renamed by a naming convention (ck: table_name_check)."""
    fix = squawk_rules.fix_for(
        "adding-not-nullable-field", "ALTER TABLE t ALTER COLUMN c SET NOT NULL;"
    )
    assert fix.count('op.f("t_c_not_null")') == 2, fix

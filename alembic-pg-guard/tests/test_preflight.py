"""Rows a revision's statement would cut or violate (_preflight), on a real PostgreSQL: the
runner measures them first and refuses in one line, nothing changed and nothing recorded."""

import sys
from pathlib import Path

import pytest
from alembic_pg_guard import HISTORY_TABLE, GuardError, GuardSettings, attach, load_config, upgrade
from alembic_pg_guard._preflight_sql import parse
from guard_helpers import clean_env, make_project
from sqlalchemy import URL, Engine, text

BASE = '''"""country"""

import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None


def upgrade():
    op.create_table(
        "country",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("alpha2", sa.String(2), nullable=False),
        sa.Column("alpha3", sa.String(3), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("official_name", sa.String(200)),
        sa.Column("area", sa.Numeric(10, 2)),
    )
    op.execute(
        "INSERT INTO country (alpha2, alpha3, name, official_name, area) VALUES "
        "('FR', 'FRA', 'France', 'French Republic', 551695.00), "
        "('GB', 'GBR', 'United Kingdom', 'United Kingdom of Great Britain', 243610.00)"
    )


def downgrade():
    op.drop_table("country")
'''

CHANGE = '''"""{title}"""

import sqlalchemy as sa
from alembic import op

revision = "bbbb00000002"
down_revision = "aaaa00000001"


def upgrade():
{body}

def downgrade():
    pass
'''

# A client's rows the ISO data never had: a long name, no official name, a duplicate alpha3.
CLIENT_NAME = "The Extremely Long Official Client Name Of A Made-Up Test Territory."
CLIENT_ROWS = (
    "INSERT INTO country (id, alpha2, alpha3, name, area) OVERRIDING SYSTEM VALUE VALUES "
    f"(7, 'QZ', 'FRA', '{CLIENT_NAME}', 12.345)"
)
LONG = len(CLIENT_NAME)
STATEMENT_FIX = (
    "nothing was changed: clean or shorten those rows first, in an earlier revision or by hand, "
    "or keep the wider type, then migrate again"
)
CONSTRAINT_FIX = (
    "nothing was changed: fix those rows first, in an earlier revision or by hand, then migrate "
    "again"
)

CASES = {
    "narrowing-using": (
        "shorten name",
        '    op.alter_column("country", "name", type_=sa.String(50), '
        'existing_type=sa.String(200), postgresql_using="name::varchar(50)")\n',
        "revision bbbb00000002 (shorten name) would lose data: ALTER TABLE country ALTER "
        "COLUMN name TYPE VARCHAR(50) USING name::varchar(50): 1 row of country has name "
        f"longer than 50 characters (e.g. id=7, {LONG} characters); {STATEMENT_FIX}",
    ),
    "narrowing": (
        "shorten name",
        '    op.alter_column("country", "name", type_=sa.String(50), '
        "existing_type=sa.String(200))\n",
        "revision bbbb00000002 (shorten name) would lose data: ALTER TABLE country ALTER "
        "COLUMN name TYPE VARCHAR(50): 1 row of country has name longer than 50 characters "
        f"(e.g. id=7, {LONG} characters); {STATEMENT_FIX}",
    ),
    "numeric-scale": (
        "round area",
        '    op.alter_column("country", "area", type_=sa.Numeric(10, 1), '
        'existing_type=sa.Numeric(10, 2), postgresql_using="area::numeric(10, 1)")\n',
        "revision bbbb00000002 (round area) would lose data: ALTER TABLE country ALTER COLUMN "
        "area TYPE NUMERIC(10, 1) USING area::numeric(10, 1): 1 row of country has area that "
        f"NUMERIC(10, 1) cannot hold unchanged (e.g. id=7, 12.35); {STATEMENT_FIX}",
    ),
    "check": (
        "short names",
        '    op.create_check_constraint("ck_country_name_short", "country", '
        '"length(name) <= 60")\n',
        "revision bbbb00000002 (short names) would fail on existing rows: ALTER TABLE country "
        "ADD CONSTRAINT ck_country_name_short CHECK (length(name) <= 60): 1 row of country "
        f"violates CHECK (length(name) <= 60) (e.g. id=7); {CONSTRAINT_FIX}",
    ),
    "using-to-null": (
        "area of large countries only",
        '    op.alter_column("country", "area", type_=sa.Numeric(12, 2), '
        'existing_type=sa.Numeric(10, 2), postgresql_using="CASE WHEN area > 100 THEN area END")\n',
        "revision bbbb00000002 (area of large countries only) would lose data: ALTER TABLE "
        "country ALTER COLUMN area TYPE NUMERIC(12, 2) USING CASE WHEN area > 100 THEN area "
        "END: 1 row of country would get area NULL from USING CASE WHEN area > 100 THEN area "
        f"END (e.g. id=7, was 12.35); {STATEMENT_FIX}",
    ),
    "check-with-percent": (
        "odd ids",
        '    op.create_check_constraint("ck_country_odd", "country", "id % 7 <> 0")\n',
        "revision bbbb00000002 (odd ids) would fail on existing rows: ALTER TABLE country ADD "
        "CONSTRAINT ck_country_odd CHECK (id % 7 <> 0): 1 row of country violates CHECK "
        f"(id % 7 <> 0) (e.g. id=7); {CONSTRAINT_FIX}",
    ),
    "validate": (
        "short names, validated",
        '    op.create_check_constraint("ck_country_name_short", "country", '
        '"length(name) <= 60", postgresql_not_valid=True)\n'
        '    op.execute("ALTER TABLE country VALIDATE CONSTRAINT ck_country_name_short")\n',
        "revision bbbb00000002 (short names, validated) would fail on existing rows: ALTER "
        "TABLE country VALIDATE CONSTRAINT ck_country_name_short: 1 row of country violates "
        f"CHECK (length((name)::text) <= 60) (e.g. id=7); {CONSTRAINT_FIX}",
    ),
    "validate-foreign-key": (
        "parent country",
        '    op.add_column("country", sa.Column("parent_id", sa.BigInteger()))\n'
        '    op.execute("UPDATE country SET parent_id = 99 WHERE id = 7")\n'
        '    op.create_foreign_key("fk_country_parent", "country", "country", ["parent_id"], '
        '["id"], postgresql_not_valid=True)\n'
        '    op.execute("ALTER TABLE country VALIDATE CONSTRAINT fk_country_parent")\n',
        "revision bbbb00000002 (parent country) would fail on existing rows: ALTER TABLE "
        "country VALIDATE CONSTRAINT fk_country_parent: 1 row of country has (parent_id) with "
        f"no match in country (id) (e.g. id=7, parent_id=99); {CONSTRAINT_FIX}",
    ),
    "not-null": (
        "official name required",
        '    op.alter_column("country", "official_name", nullable=False, '
        "existing_type=sa.String(200))\n",
        "revision bbbb00000002 (official name required) would fail on existing rows: ALTER "
        "TABLE country ALTER COLUMN official_name SET NOT NULL: 1 row of country has "
        f"official_name NULL (e.g. id=7); {CONSTRAINT_FIX}",
    ),
    "unique": (
        "unique alpha3",
        '    op.create_unique_constraint("uq_country_alpha3", "country", ["alpha3"])\n',
        "revision bbbb00000002 (unique alpha3) would fail on existing rows: ALTER TABLE country "
        "ADD CONSTRAINT uq_country_alpha3 UNIQUE (alpha3): 1 duplicate value of (alpha3) in "
        f"country (e.g. alpha3='FRA' on id=1, id=7); {CONSTRAINT_FIX}",
    ),
    "unique-index-concurrently": (
        "unique alpha3 index",
        "    with op.get_context().autocommit_block():\n"
        '        op.create_index("country_alpha3_key", "country", ["alpha3"], unique=True, '
        "postgresql_concurrently=True)\n",
        "revision bbbb00000002 (unique alpha3 index) would fail on existing rows (and leave an "
        "INVALID index): CREATE UNIQUE INDEX CONCURRENTLY country_alpha3_key ON country "
        "(alpha3): 1 duplicate value of (alpha3) in country (e.g. alpha3='FRA' on id=1, id=7); "
        f"{CONSTRAINT_FIX}",
    ),
}
# What the client's row is turned into for the change to apply.
FIXES = {
    "narrowing-using": "UPDATE country SET name = 'Made-Up Test Territory' WHERE id = 7",
    "numeric-scale": "UPDATE country SET area = 12.3 WHERE id = 7",
    "not-null": "UPDATE country SET official_name = name WHERE id = 7",
    "unique": "UPDATE country SET alpha3 = 'QZZ' WHERE id = 7",
    "unique-index-concurrently": "UPDATE country SET alpha3 = 'QZZ' WHERE id = 7",
}
SCHEMA = text(
    "SELECT 'column', a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || "
    "CASE WHEN a.attnotnull THEN ' not null' ELSE '' END FROM pg_attribute a "
    "WHERE a.attrelid = 'country'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
    "UNION ALL SELECT 'constraint', conname || ' ' || pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE conrelid = 'country'::regclass "
    "UNION ALL SELECT 'index', indexrelid::regclass::text FROM pg_index "
    "WHERE indrelid = 'country'::regclass ORDER BY 1, 2"
)


def state(engine: Engine) -> tuple[list, list, list, list]:
    """The country table's schema and rows, alembic_version and the history's revisions."""
    with engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(SCHEMA)],
            [tuple(r) for r in conn.execute(text("SELECT * FROM country ORDER BY id"))],
            list(conn.scalars(text("SELECT version_num FROM alembic_version"))),
            list(conn.scalars(text(f"SELECT revision FROM {HISTORY_TABLE} ORDER BY 1"))),
        )


@pytest.fixture
def migrate(tmp_path: Path, database: URL, monkeypatch: pytest.MonkeyPatch):
    """The runner, in-process, on a project at the base revision; `migrate(title, body)`
    adds the change on top of it and upgrades to head."""
    project = make_project(tmp_path / "p", database, clean_env())
    (project.versions / "aaaa00000001_country.py").write_text(BASE)
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    cfg = attach(load_config(project.root / "alembic.ini"), GuardSettings(url=database))
    upgrade(cfg)

    def run(title: str | None = None, body: str | None = None) -> str:
        if title is not None:
            change = CHANGE.format(title=title, body=body)
            (project.versions / "bbbb00000002_change.py").write_text(change)
        return upgrade(cfg)

    return run


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=CASES.keys())
def test_rows_a_change_would_break_are_measured_before_it_runs(migrate, engine: Engine, case: str):
    """A client's row the change would truncate, round or violate: refused before the
    statement runs, naming the count and the row; the schema, the rows and the version as
    they were. Without that row (or once fixed), the same revision applies."""
    title, body, expected = CASES[case]
    with engine.begin() as conn:
        conn.exec_driver_sql(CLIENT_ROWS)
    before = state(engine)
    assert before[2] == ["aaaa00000001"]

    with pytest.raises(GuardError) as refused:
        migrate(title, body)
    assert str(refused.value) == expected
    assert state(engine) == before  # nothing changed, nothing recorded, no INVALID index

    if case in FIXES:
        with engine.begin() as conn:
            conn.exec_driver_sql(FIXES[case])
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM country WHERE id = 7")
    migrate()
    after = state(engine)
    assert after[2] == ["bbbb00000002"]
    assert after[3] == ["aaaa00000001", "bbbb00000002"]
    assert after[0] != before[0]  # the change applied


def test_rows_that_fit_are_applied_and_widening_reads_nothing(migrate, engine: Engine):
    """All rows fit: the narrowing applies. A widening is not measured at all."""
    migrate(*CASES["narrowing-using"][:2])
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT max(length(name)) FROM country")) == 14
        names = conn.execute(text("SELECT name FROM country ORDER BY id")).scalars().all()
        assert names == ["France", "United Kingdom"]
        typed = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        typed += "WHERE attrelid = 'country'::regclass AND attname = 'name'"
        assert conn.scalar(text(typed)) == "character varying(50)"


STATEMENTS = {
    'ALTER TABLE public."Country" ALTER name SET DATA TYPE character varying ( 50 ) COLLATE "C"': (
        'public."Country"',
        "TypeChange",
    ),
    "ALTER TABLE country ADD CONSTRAINT ck CHECK (x % 2 = 0) NOT VALID": None,
    "ALTER TABLE ONLY country ADD PRIMARY KEY (id), ALTER a SET NOT NULL": (
        "country",
        "Unique NotNull",
    ),
    "ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_a_idx": None,
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON ONLY s.t USING btree "
    '(lower(name) text_pattern_ops DESC NULLS LAST, c COLLATE "C") WHERE d IS NULL': (
        "s.t",
        "Unique",
    ),
    "-- a comment\nCREATE INDEX ix ON t (a); ALTER TABLE t ALTER a TYPE int USING CAST(a AS int)": (
        "t",
        "TypeChange",
    ),
    "INSERT INTO t VALUES ('ALTER TABLE t ALTER a SET NOT NULL')": None,
    "ALTER TABLE t ADD CHECK (p <> 'C:\\' AND q <> E'it\\'s')": ("t", "Check"),
}


@pytest.mark.parametrize("statement", STATEMENTS, ids=range(len(STATEMENTS)))
def test_the_statements_it_measures(statement: str):
    """The shapes it reads (quoted, qualified, several actions or statements); the rest,
    such as NOT VALID or USING INDEX, it leaves to PostgreSQL."""
    parsed = parse(statement)
    expected = STATEMENTS[statement]
    if expected is None:
        assert parsed == []
        return
    (one,) = parsed
    assert (one.table, " ".join(type(a).__name__ for a in one.actions)) == expected


def test_an_index_key_keeps_what_decides_equality():
    """Opclass, order and NULLS FIRST/LAST dropped; the expression and its COLLATE kept."""
    (one,) = parse(
        "CREATE UNIQUE INDEX ix ON t ((a + b) DESC, lower(name) text_pattern_ops, "
        'c COLLATE "C" NULLS FIRST) NULLS NOT DISTINCT WHERE d IS NULL'
    )
    (unique,) = one.actions
    assert unique.keys == ("(a + b)", "lower(name)", 'c COLLATE "C"')
    assert (unique.nulls_distinct, unique.where) == (False, "d IS NULL")

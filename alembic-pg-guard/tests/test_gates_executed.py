"""The gates lint what revisions run, not only what they render offline: DDL hidden under
`if context.is_offline_mode()`, DO blocks, DISABLE TRIGGER, a merge revision's own
operations, narrowing type changes; and a merge is replayed with each branch first."""

from pathlib import Path

import pytest
from alembic_pg_guard import _squawk_rules as squawk_rules
from guard_helpers import CREATE_GADGET, Project, clean_env, make_project
from sqlalchemy import URL

HEADER = '''"""{doc}"""

import sqlalchemy as sa
from alembic import context, op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None
{allow}

'''


@pytest.fixture
def project(tmp_path: Path, database: URL, pg_server: URL) -> Project:
    scratch = pg_server.render_as_string(hide_password=False)
    return make_project(
        tmp_path / "gadgets", database, clean_env(ALEMBIC_PG_GUARD_SCRATCH_URL=scratch)
    )


def write(project: Project, revision: str, down, body: str, allow: dict | None = None) -> Path:
    path = project.versions / f"{revision}_x.py"
    allow_line = f"squawk_allow = {allow!r}" if allow else ""
    header = HEADER.format(doc=f"rev {revision}", revision=revision, down=down, allow=allow_line)
    path.write_text(header + body)
    return path


def problems(proc) -> list[str]:
    """The gate's problem lines (exit 1, no traceback); Alembic's log lines left out."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if not x.startswith(("INFO", "WARN"))]
    return [x.removeprefix("error: ") for x in (lines if len(lines) == 1 else lines[:-1])]


def rule_lines(lines: list[str], rule: str) -> list[str]:
    return [line for line in lines if f": {rule}: " in line]


HIDDEN_INDEX = """def upgrade():
    if context.is_offline_mode():
        return
    op.create_index("gadget_name_idx", "gadget", ["name"])


def downgrade():
    op.drop_index("gadget_name_idx", table_name="gadget", if_exists=True)
"""


@pytest.mark.slow  # starts processes and a throwaway database
def test_ddl_hidden_from_offline_mode_is_linted_and_said_missing_from_the_offline_sql(
    project: Project,
):
    write(project, "aaaa00000001", None, CREATE_GADGET)
    hidden = write(project, "bbbb00000002", "aaaa00000001", HIDDEN_INDEX)

    lines = problems(project.guard("check", "squawk"))
    where = f"squawk: alembic/versions/{hidden.name}:15: bbbb00000002 upgrade: "
    (missing,) = rule_lines(lines, "online-only")
    assert missing.startswith(where + "online-only: CREATE INDEX gadget_name_idx ON gadget")
    assert "missing from the offline SQL (alembic upgrade aaaa00000001:bbbb00000002 --sql)" in (
        missing
    )
    assert missing.endswith("[run online: CREATE INDEX gadget_name_idx ON gadget (name);]")
    (lint,) = rule_lines(lines, "require-concurrent-index-creation")
    assert lint.startswith(where + "require-concurrent-index-creation: ")
    assert "postgresql_concurrently=True" in lint  # the same fix text as offline


DO_BLOCK = """def upgrade():
    op.execute("DO $$ BEGIN CREATE INDEX IF NOT EXISTS gadget_name_idx ON gadget (name); END $$")
    op.execute("ALTER TABLE gadget DISABLE TRIGGER ALL")
    op.execute("ALTER TABLE gadget ENABLE TRIGGER ALL")


def downgrade():
    pass
"""


@pytest.mark.slow
def test_do_blocks_and_disable_trigger_are_refused_unless_allowed(project: Project):
    write(project, "aaaa00000001", None, CREATE_GADGET)
    path = write(project, "bbbb00000002", "aaaa00000001", DO_BLOCK)

    lines = problems(project.guard("check", "squawk"))
    (do,) = rule_lines(lines, "do-block")
    assert do.startswith(
        f"squawk: alembic/versions/{path.name}:13: bbbb00000002 upgrade: do-block:"
    )
    assert 'squawk_allow = {"do-block": "<why>"}' in do
    (trigger,) = rule_lines(lines, "disable-trigger")
    assert f"{path.name}:14: bbbb00000002 upgrade: disable-trigger: DISABLE TRIGGER" in trigger

    allow = {"do-block": "test: the index is tiny", "disable-trigger": "test: no writers"}
    write(project, "bbbb00000002", "aaaa00000001", DO_BLOCK, allow)
    proc = project.guard("check", "squawk")
    assert proc.returncode == 0, proc.stderr
    assert "allowed disable-trigger upgrade x1 (test: no writers)" in proc.stdout
    assert "allowed do-block upgrade x1 (test: the index is tiny)" in proc.stdout


def add_column(column: str) -> str:
    return f"""def upgrade():
    op.add_column("gadget", sa.Column("{column}", sa.Text()))


def downgrade():
    op.drop_column("gadget", "{column}")
"""


MERGE_WITH_INDEX = """def upgrade():
    op.create_index("gadget_colour_idx", "gadget", ["colour"])


def downgrade():
    op.drop_index("gadget_colour_idx", table_name="gadget", if_exists=True)
"""


@pytest.mark.slow
def test_a_merge_revisions_own_operations_are_linted(project: Project):
    write(project, "aaaa00000001", None, CREATE_GADGET)
    write(project, "bbbb00000002", "aaaa00000001", add_column("colour"))
    write(project, "cccc00000003", "aaaa00000001", add_column("size"))
    merge = write(project, "dddd00000004", ("bbbb00000002", "cccc00000003"), MERGE_WITH_INDEX)

    proc = project.guard("check", "squawk")
    lines = problems(proc)
    (index,) = rule_lines(lines, "require-concurrent-index-creation")
    assert index.startswith(
        f"squawk: alembic/versions/{merge.name}:13: dddd00000004 upgrade: "
        "require-concurrent-index-creation: "
    )
    assert index.endswith("[run online: CREATE INDEX gadget_colour_idx ON gadget (colour);]")
    (drop,) = rule_lines(lines, "require-concurrent-index-deletion")
    assert f"{merge.name}:17: dddd00000004 downgrade: require-concurrent-index-deletion" in drop
    assert "squawk: dddd00000004 rev dddd00000004: 2 problem(s)" in proc.stdout


NARROW = """def upgrade():
    op.alter_column(
        "gadget",
        "code",
        existing_type=sa.String(200),
        type_=sa.String(50),
        postgresql_using="code::varchar(50)",
    )


def downgrade():
    op.alter_column("gadget", "code", existing_type=sa.String(50), type_=sa.String(200))
"""
WIDEN = """def upgrade():
    op.alter_column("gadget", "code", existing_type=sa.String(100), type_=sa.String(200))


def downgrade():
    pass
"""
ADD_CODE = """def upgrade():
    op.add_column("gadget", sa.Column("code", sa.String({n})))


def downgrade():
    op.drop_column("gadget", "code")
"""
TEXT_ALLOWED = {"prefer-text-field": "test"}


@pytest.mark.slow
def test_a_narrowing_type_change_is_flagged_and_a_widening_passes(project: Project):
    write(project, "aaaa00000001", None, CREATE_GADGET)
    write(project, "bbbb00000002", "aaaa00000001", ADD_CODE.format(n=200), TEXT_ALLOWED)
    narrow = write(project, "cccc00000003", "bbbb00000002", NARROW)

    lines = problems(project.guard("check", "squawk"))
    (line,) = rule_lines(lines, "narrowing-type-change")
    assert line.startswith(
        f"squawk: alembic/versions/{narrow.name}:13: cccc00000003 upgrade: narrowing-type-change: "
        "gadget.code character varying(200) -> VARCHAR(50): a narrowing type change may lose data"
    )
    assert "the runner measures the rows before running it" in line
    assert 'squawk_allow = {"narrowing-type-change": "<why>"}' in line

    narrow.unlink()
    write(project, "bbbb00000002", "aaaa00000001", ADD_CODE.format(n=100), TEXT_ALLOWED)
    write(project, "cccc00000003", "bbbb00000002", WIDEN)
    proc = project.guard("check", "squawk")
    assert proc.returncode == 0, proc.stderr
    assert "squawk: cccc00000003 rev cccc00000003: ok; varchar widening x1" in proc.stdout


DROP_NAME = """def upgrade():
    op.drop_column("gadget", "nickname")


def downgrade():
    op.add_column("gadget", sa.Column("nickname", sa.Text()))
"""
BACKFILL_NAME = """def upgrade():
    op.execute("UPDATE gadget SET nickname = name WHERE nickname IS NULL")


def downgrade():
    pass
"""
EMPTY = "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"


@pytest.mark.slow
def test_a_merge_is_replayed_with_each_branch_applied_first(project: Project):
    """Branch A drops a column that branch B backfills: a database that applied A before
    the merge existed fails on B, whatever order a fresh walk of the history takes."""
    write(project, "aaaa00000001", None, CREATE_GADGET)
    write(project, "aaaa00000002", "aaaa00000001", add_column("nickname"))
    write(project, "bbbb00000003", "aaaa00000002", DROP_NAME)
    backfill = write(project, "cccc00000003", "aaaa00000002", BACKFILL_NAME)
    merge = write(project, "dddd00000004", ("bbbb00000003", "cccc00000003"), EMPTY)

    lines = problems(project.guard("check", "stairway"))
    (line,) = [x for x in lines if x.startswith("stairway: merge ")]
    assert line.startswith(
        f"stairway: merge dddd00000004 (alembic/versions/{merge.name}) fails when a database "
        "applied bbbb00000003's branch first, then cccc00000003's"
    )
    assert f"alembic/versions/{backfill.name}:13: revision cccc00000003" in line
    assert 'UndefinedColumn: column "nickname" does not exist' in line
    assert line.endswith("or rebase one branch onto the other")


@pytest.mark.parametrize(
    "old,new,narrowing",
    [
        ("character varying(200)", "VARCHAR(50)", True),
        ("character varying(100)", "VARCHAR(200)", False),
        ("character varying(100)", "TEXT", False),
        ("text", "VARCHAR(10)", True),
        ("numeric(12,2)", "NUMERIC(10, 2)", True),
        ("numeric(12,2)", "NUMERIC(12, 1)", True),
        ("numeric(10,2)", "NUMERIC(12, 2)", False),
        ("bigint", "INTEGER", True),
        ("integer", "BIGINT", False),
        ("numeric(10,2)", "INTEGER", True),
    ],
)
def test_narrowing_is_judged_from_the_old_and_new_types(old: str, new: str, narrowing: bool):
    assert squawk_rules.narrows(old, new) is narrowing


def test_a_using_that_cuts_values_is_narrowing_whatever_the_new_type():
    sql = "ALTER TABLE gadget ALTER COLUMN code TYPE TEXT USING left(code, 10);"
    assert squawk_rules.narrowing_changes(sql, {"code": "character varying(200)"}) == [
        "gadget.code USING left(code, 10) cuts values"
    ]
    widening = "ALTER TABLE gadget ALTER COLUMN code TYPE VARCHAR(300) USING code::varchar(300);"
    assert squawk_rules.narrowing_changes(widening, {"code": "character varying(200)"}) == []

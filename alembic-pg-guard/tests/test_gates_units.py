"""The gates' pure parts (_gates): how a drift is worded, how allowances are read; the
hints alembic.ini gives the one-line errors (_config)."""

from pathlib import Path

import pytest
from alembic_pg_guard import GuardError, GuardSettings, Hints, attach, load_config, settings_of
from alembic_pg_guard._gates import describe_diff, squawk_allowances
from sqlalchemy import Column, Index, MetaData, String, Table, text


def test_describe_diff_names_what_changed():
    table = Table("t", MetaData(), Column("c", String(5)))
    assert describe_diff(("add_table", table)) == "add_table t"
    assert describe_diff(("remove_column", None, "t", table.c.c)) == "remove_column t.c"
    index = Index("t_c_idx", table.c.c)
    assert describe_diff(("add_index", index)) == "add_index t_c_idx on t"
    modify = [("modify_nullable", None, "t", "c", {}, True, False)]
    assert describe_diff(modify) == "modify_nullable t.c: True -> False"


def test_squawk_allowances_are_read_without_importing_the_revision(tmp_path: Path):
    path = tmp_path / "rev.py"
    path.write_text(
        'raise SystemExit("imported!")\n'
        'squawk_allow: dict[str, str] = {"ban-drop-column": "the column was never read"}\n'
    )
    assert squawk_allowances(path) == {"ban-drop-column": "the column was never read"}
    path.write_text("def upgrade(): pass\n")
    assert squawk_allowances(path) == {}


def test_hints_come_from_alembic_ini_and_a_misspelt_one_is_one_line(tmp_path: Path):
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\nscript_location = x\n\n[alembic_pg_guard]\nhint_alembic = make alembic\n"
    )
    cfg = attach(load_config(ini), GuardSettings())
    assert settings_of(cfg).hints.alembic == "make alembic"
    assert settings_of(cfg).hints.migrate == Hints().migrate  # the others keep their defaults
    ini.write_text(ini.read_text() + "hint_almebic = typo\n")
    with pytest.raises(GuardError, match=r"unknown hint_almebic"):
        attach(load_config(ini), GuardSettings())


def test_a_server_default_drift_reads_as_sql():
    column = Column("c", String(5), server_default=text("'client'"))
    old = "'iso'::character varying"
    diff = [("modify_default", None, "t", "c", {}, old, column.server_default)]
    assert describe_diff(diff) == "modify_default t.c: 'iso'::character varying -> 'client'"
    assert describe_diff([("modify_default", None, "t", "c", {}, "now()", None)]) == (
        "modify_default t.c: now() -> no default"
    )


@pytest.mark.parametrize(
    "given",
    ["postgresql://u:p@h/d", "postgresql+asyncpg://u:p@h/d", "postgresql+psycopg://u:p@h/d"],
)
def test_any_postgresql_url_runs_on_psycopg2(given: str):
    """alembic init's users write postgresql://, async projects +asyncpg: both were tracebacks."""
    assert GuardSettings(url=given).url.drivername == "postgresql+psycopg2"


def test_the_environment_wins_and_the_placeholder_is_no_url(tmp_path: Path, monkeypatch):
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\nscript_location = x\nsqlalchemy.url = driver://user:pass@localhost/dbname\n"
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(GuardError, match=r"set sqlalchemy\.url or DATABASE_URL"):
        _ = settings_of(load_config(ini)).sync_url
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@envhost/d")
    assert settings_of(load_config(ini)).sync_url.host == "envhost"
    with pytest.raises(GuardError, match=r"mysql://\.\.\., not postgresql://"):
        GuardSettings(url="mysql://u:p@h/d")

"""The gates' pure parts (_gates): how a drift is worded, how allowances are read."""

from pathlib import Path

from alembic_pg_guard._gates import describe_diff, squawk_allowances
from sqlalchemy import Column, Index, MetaData, String, Table


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

"""The guard's comparators (_compare): a column's collation, an index's method, its
partial WHERE, INCLUDE columns and operator classes, which Alembic's autogenerate leaves
alone; and no diff for a model that did not change, however PostgreSQL spells it."""

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_pg_guard._autogenerate import AUTOGENERATE_PLUGINS
from alembic_pg_guard._gates import describe_diff
from guard_helpers import Project, clean_env, make_project
from sqlalchemy import URL, Connection, Engine, create_engine, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.pool import NullPool

# --- the comparison, in-process ---------------------------------------------------------


def widgets(
    collation: str | None = None,
    using: str = "gin",
    where: Callable[[sa.Table], object] = lambda t: t.c.status == "live",
    include: tuple[str, ...] = (),
    ops: str = "text_pattern_ops",
) -> sa.MetaData:
    metadata = sa.MetaData()
    t = sa.Table(
        "widget",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100, collation=collation)),
        sa.Column("words", TSVECTOR),
        sa.Column("status", sa.Text),
        sa.Column("n", sa.Integer),
    )
    sa.Index("widget_words_idx", t.c.words, postgresql_using=using)
    sa.Index("widget_live_idx", t.c.n, postgresql_where=where(t), postgresql_include=list(include))
    # As the project's search index: an expression, its operator class keyed by its label.
    lowered = sa.func.lower(t.c.name).label("lower_name")
    sa.Index("widget_lower_idx", lowered, postgresql_ops={"lower_name": ops})
    return metadata


def diffs(conn: Connection, metadata: sa.MetaData) -> list:
    opts = {"compare_type": True, "autogenerate_plugins": AUTOGENERATE_PLUGINS}
    return compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)


def flat(found: list) -> list[tuple]:
    return [d for item in found for d in (item if isinstance(item, list) else [item])]


@pytest.fixture
def conn(engine: Engine):
    with engine.begin() as setup:
        widgets().create_all(setup)
        setup.exec_driver_sql(
            "CREATE INDEX widget_any_idx ON widget (n) WHERE n IN (1, 2) AND name = 'x'"
        )
    with engine.connect() as connection:
        yield connection


def test_an_unchanged_model_gives_no_diff_however_postgresql_spells_it(conn: Connection):
    same = widgets(collation="default", where=lambda t: text("status = 'live'"))
    t = same.tables["widget"]
    # PostgreSQL deparses this one as ((n = ANY (ARRAY[1, 2])) AND ((name)::text = 'x'::text)).
    sa.Index("widget_any_idx", t.c.n, postgresql_where=t.c.n.in_([1, 2]) & (t.c.name == "x"))
    assert diffs(conn, same) == []


@pytest.mark.parametrize(
    ("changed", "kind", "said"),
    [
        (widgets(collation="C"), "modify_type", "collation='C'"),
        (widgets(using="gist"), "modify_index", "using gin -> gist"),
        (
            widgets(where=lambda t: t.c.status != "gone"),
            "modify_index",
            "where (status = 'live'::text) -> status != 'gone'",
        ),
        (widgets(include=("id",)), "modify_index", "include () -> (id)"),
        (widgets(ops="varchar_pattern_ops"), "modify_index", "ops (text_pattern_ops) -> (varchar"),
    ],
    ids=["collation", "method", "where", "include", "opclass"],
)
def test_each_change_is_one_diff(conn: Connection, changed: sa.MetaData, kind: str, said: str):
    changed_tables = changed.tables["widget"]
    sa.Index(
        "widget_any_idx", changed_tables.c.n, postgresql_where=text("n IN (1, 2) AND name = 'x'")
    )
    (diff,) = flat(diffs(conn, changed))
    assert diff[0] == kind, diff
    assert said in (repr(diff[-1]) if kind == "modify_type" else diff[-1]), diff


def test_drift_names_the_index_and_what_changed(conn: Connection):
    changed = widgets(using="gist")
    t = changed.tables["widget"]
    sa.Index("widget_any_idx", t.c.n, postgresql_where=text("n IN (1, 2) AND name = 'x'"))
    (diff,) = flat(diffs(conn, changed))
    assert describe_diff(diff) == "modify_index widget_words_idx on widget: using gin -> gist"


# --- a project of its own: drift, autogenerate, upgrade, downgrade -----------------------

MODELS = """from sqlalchemy import BigInteger, Identity, Index, String, Text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    __tablename__ = "gadget"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    words: Mapped[str] = mapped_column(TSVECTOR)
    status: Mapped[str] = mapped_column(Text)


Index("gadget_words_idx", Gadget.words, postgresql_using="gin")
Index("gadget_live_idx", Gadget.name, postgresql_where=Gadget.status == "live")
"""

CATALOG = """
SELECT (SELECT collation_name FROM information_schema.columns
        WHERE table_name = 'gadget' AND column_name = 'name') AS collation,
       array_agg(indexdef ORDER BY indexname) AS indexes
FROM pg_indexes WHERE tablename = 'gadget'
"""


def catalog(url: URL) -> tuple:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(CATALOG)).one())
    finally:
        engine.dispose()


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def project(tmp_path: Path, database: URL, pg_server: URL) -> Project:
    """A project at its first revision, applied by the runner."""
    scratch = pg_server.render_as_string(hide_password=False)
    made = make_project(
        tmp_path / "gadgets", database, clean_env(ALEMBIC_PG_GUARD_SCRATCH_URL=scratch)
    )
    (made.root / "models.py").write_text(MODELS)
    ok(made.alembic("revision", "--autogenerate", "-m", "create gadget"))
    ok(made.guard("migrate"))
    return made


@pytest.mark.slow  # starts processes
def test_an_unchanged_project_is_drift_clean(project: Project):
    assert "drift: ok" in ok(project.guard("check", "drift"))
    ok(project.alembic("check"))


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize(
    ("old", "new", "said", "written"),
    [
        (
            "String(100)",
            'String(100, collation="C")',
            "modify_type gadget.name: VARCHAR(length=100) -> String(length=100, collation='C')",
            "type_=sa.String(length=100, collation='C')",
        ),
        (
            'postgresql_using="gin"',
            'postgresql_using="gist"',
            "modify_index gadget_words_idx on gadget: using gin -> gist",
            "postgresql_using='gist'",
        ),
        (
            'Gadget.status == "live"',
            'Gadget.status != "gone"',
            "modify_index gadget_live_idx on gadget: where (status = 'live'::text) -> "
            "status != 'gone'",
            "postgresql_where=sa.text(\"status != 'gone'\")",
        ),
    ],
    ids=["collation", "method", "where"],
)
def test_a_change_is_drift_then_a_revision_that_applies_and_rolls_back(
    project: Project, old: str, new: str, said: str, written: str
):
    before = catalog(project.url)
    models = project.root / "models.py"
    models.write_text(models.read_text().replace(old, new))

    drift = project.guard("check", "drift")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    line = drift.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: drift: the models differ from the migrations: {said}; "), line

    ok(project.alembic("revision", "--autogenerate", "-m", "change"))
    written_file = max(project.revision_files(), key=lambda p: p.stat().st_mtime_ns)
    assert written in written_file.read_text()
    ok(project.guard("migrate"))
    assert catalog(project.url) != before
    assert "drift: ok" in ok(project.guard("check", "drift"))

    ok(project.alembic("downgrade", "-1"))
    assert catalog(project.url) == before

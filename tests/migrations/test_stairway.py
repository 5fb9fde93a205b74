"""A stairway: every revision up, down, up, on a fresh database, with a client's rows
(countries and their subdivisions, added and edited) around each step. Runs over
whatever revisions alembic/versions holds."""

import logging
from collections.abc import Iterator

import pycountry
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, insert, select, text, update

from src.config import Settings
from tests.helpers import (
    config_for,
    current_version,
    revisions_in_order,
    schema_diff,
    schema_snapshot,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def seed_candidates() -> Iterator[dict]:
    """Countries a client could have created: real ISO 3166 codes from the end of the
    alphabet (so backfills find them) with a name of their own (a row identical to the ISO
    data is, by design, removed with it by the ISO-load revision's downgrade); then the
    user-assigned codes (XA.., XAA..) once the real ones are all taken."""
    for c in sorted(pycountry.countries, key=lambda c: c.alpha_2, reverse=True):
        yield {
            "alpha2": c.alpha_2,
            "alpha3": c.alpha_3,
            "name": f"{c.name} (a client's row)",
            "numeric": c.numeric,
            "official_name": getattr(c, "official_name", None),
        }
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        yield {"alpha2": f"X{letter}", "alpha3": f"X{letter}X", "name": f"Private use X{letter}"}


ISO_SUBDIVISION_CODES = {s.code for s in pycountry.subdivisions}
WATCHED = ("country", "subdivision")  # parents first
EDIT = "Edited by a client"
ISO_LOAD = "8ef7e5e3c367"  # the revision that loads ISO 3166 countries and subdivisions


def required(table: Table, known: dict) -> dict:
    """`known`'s values for `table`'s columns; fails on a required column it lacks."""
    values = {}
    for column in table.columns:
        if column.name in known:
            values[column.name] = known[column.name]
        elif column.nullable or column.server_default is not None or column.identity:
            continue
        elif column.autoincrement is True and column.primary_key:
            continue
        else:
            pytest.fail(
                f"the stairway test does not know how to seed the new required column "
                f"{table.name}.{column.name}: add it to the seeds of test_stairway.py"
            )
    return values


def country_values(table: Table, conn: Connection) -> dict:
    """The next seed row for `country` as the table looks now."""
    taken = {row.alpha2 for row in conn.execute(select(table.c.alpha2))}
    return required(table, next(c for c in seed_candidates() if c["alpha2"] not in taken))


def subdivision_values(table: Table, conn: Connection, country_id: int, alpha2: str) -> dict:
    """A subdivision a client adds under country `country_id`: a code ISO does not use."""
    taken = set(conn.scalars(select(table.c.code)))
    code = next(
        code
        for code in (f"{alpha2}-Q{n:02d}" for n in range(100))
        if code not in ISO_SUBDIVISION_CODES and code not in taken
    )
    known = {"country_id": country_id, "code": code, "name": f"{code} (a client's row)"}
    return required(table, {**known, "type": "Client region"})


class SeededRows:
    """Rows a client puts in `country` and `subdivision` around each step: every step must
    keep them and their values, except what it visibly drops (the table, or a column).
    Before a step, a new country and a new subdivision. After its upgrade, also what a
    client does while the revision is live: a subdivision under a country the history
    loaded and nobody edited, and an edit of one row per table that the history loaded.
    Other rows are not watched."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.rows: dict[str, dict[int, dict]] = {name: {} for name in WATCHED}  # id -> values
        self.seeded = dict.fromkeys(WATCHED, 0)
        self.edited = dict.fromkeys(WATCHED, 0)

    def tables(self) -> dict[str, Table]:
        metadata = MetaData()
        metadata.reflect(self.engine, only=lambda name, _: name in WATCHED)
        return dict(metadata.tables)

    def seed(self, step: str, *, live: bool = False) -> None:
        tables = self.tables()
        with self.engine.begin() as conn:
            if "country" in tables:
                self.add_country(tables["country"], conn)
            if "subdivision" in tables:
                self.add_subdivision(tables["country"], tables["subdivision"], conn)
            if live:
                for name in WATCHED:
                    if name in tables:
                        self.edit(tables[name], conn)
            if "subdivision" in tables:  # their countries must stay too, with their ids
                parents = conn.scalars(
                    select(tables["subdivision"].c.country_id).where(
                        tables["subdivision"].c.id.in_(self.rows["subdivision"])
                    )
                )
                for key in parents:
                    self.rows["country"].setdefault(key, {})
        self.check(f"{'writing' if live else 'seeding'} rows {step}")

    def add_country(self, table: Table, conn: Connection) -> None:
        values = country_values(table, conn)
        key = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        self.rows["country"][key] = {}
        self.seeded["country"] += 1

    def add_subdivision(self, countries: Table, table: Table, conn: Connection) -> None:
        """Under a country nobody touched if there is one (its downgrade must not take the
        client's row with it), else under one of the seeded countries."""
        watched = countries.c.id.in_(self.rows["country"])  # false sorts first
        query = select(countries.c.id, countries.c.alpha2).order_by(watched, countries.c.id)
        parent = conn.execute(query.limit(1)).one()
        values = subdivision_values(table, conn, parent.id, parent.alpha2)
        key = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        self.rows["subdivision"][key] = {}
        self.seeded["subdivision"] += 1

    def edit(self, table: Table, conn: Connection) -> None:
        """A client renames one row that the history loaded (none: nothing to edit)."""
        key = conn.scalar(
            select(table.c.id)
            .where(table.c.id.not_in(self.rows[table.name]))
            .order_by(table.c.id.desc())
            .limit(1)
        )
        if key is None:
            return
        conn.execute(update(table).where(table.c.id == key).values(name=EDIT))
        self.rows[table.name][key] = {}
        self.edited[table.name] += 1

    def check(self, step: str) -> None:
        tables = self.tables()
        for name in reversed(WATCHED):  # children first: a cascade names the rows it took
            self.check_table(step, name, tables.get(name))

    def check_table(self, step: str, name: str, table: Table | None) -> None:
        rows = self.rows[name]
        if table is None:
            rows.clear()  # the step dropped the table: nothing left to keep
            return
        with self.engine.connect() as conn:
            now = {row["id"]: dict(row) for row in conn.execute(select(table)).mappings()}
        lost = sorted(set(rows) - set(now))
        assert not lost, f"{step} lost {name} rows {[rows[key] for key in lost]}"
        for key, kept in rows.items():
            row = now[key]
            for column in list(kept):
                if column not in row:
                    del kept[column]  # the step dropped the column, and its values with it
                else:
                    assert row[column] == kept[column], (
                        f"{step} changed {name} {key}.{column}: {kept[column]!r} -> {row[column]!r}"
                    )
            kept.update({column: value for column, value in row.items() if value is not None})


def test_stairway_up_down_up_keeps_schema_and_data(settings: Settings, alembic_engine: Engine):
    """For each revision in order: seed rows, upgrade, write rows, downgrade, upgrade.

    After the downgrade the schema is exactly what it was before the step (the downgrade
    undoes the upgrade), after the second upgrade it is what the first produced, and the
    clients' rows (added before the step, or added and edited while it was live) survive
    with their values, unless the step drops their table or column.
    """
    cfg = config_for(settings.for_database(alembic_engine.url), alembic_engine)
    script = ScriptDirectory.from_config(cfg)
    revisions = revisions_in_order(script)
    assert revisions, "no revisions"
    data = SeededRows(alembic_engine)
    for rev in revisions:
        name = f"{rev.revision} ({rev.doc})"
        if isinstance(rev.down_revision, tuple | list):
            command.upgrade(cfg, rev.revision)  # a merge point: nothing of its own to undo
            continue
        down = rev.down_revision or "base"
        data.seed(name)
        before = schema_snapshot(alembic_engine)

        command.upgrade(cfg, rev.revision)
        assert current_version(alembic_engine) == {rev.revision}
        after = schema_snapshot(alembic_engine)
        data.check(f"upgrade to {name}")
        data.seed(f"at {name}", live=True)

        command.downgrade(cfg, down)
        assert current_version(alembic_engine) == ({down} if rev.down_revision else set())
        diff = schema_diff(before, schema_snapshot(alembic_engine))
        assert not diff, f"downgrade of {name} does not undo its upgrade:\n" + "\n".join(diff)
        data.check(f"downgrade of {name}")

        command.upgrade(cfg, rev.revision)
        diff = schema_diff(after, schema_snapshot(alembic_engine))
        assert not diff, f"upgrading {name} again gives another schema:\n" + "\n".join(diff)
        data.check(f"second upgrade to {name}")
    assert current_version(alembic_engine) == set(script.get_heads())
    assert all(data.seeded.values()), f"a watched table was never seeded: {data.seeded}"
    assert all(data.edited.values()), f"no step had rows of the history to edit: {data.edited}"


def test_iso_data_downgrade_removes_only_untouched_rows(
    settings: Settings, alembic_engine: Engine, caplog: pytest.LogCaptureFixture
):
    """The ISO load's downgrade takes back its own rows, and only those nobody changed:
    a client's subdivision keeps its (unedited) country, an edited one keeps its edit."""
    cfg = config_for(settings.for_database(alembic_engine.url), alembic_engine)
    rev = ScriptDirectory.from_config(cfg).get_revision(ISO_LOAD)
    command.upgrade(cfg, ISO_LOAD)
    with alembic_engine.begin() as conn:
        france = conn.scalar(text("SELECT id FROM country WHERE alpha2 = 'FR'"))
        conn.execute(
            text(
                "INSERT INTO subdivision (country_id, code, name, type) "
                "VALUES (:id, 'FR-Q01', 'A client''s region', 'Region')"
            ),
            {"id": france},
        )
        conn.execute(text(f"UPDATE subdivision SET name = '{EDIT}' WHERE code = 'DE-BY'"))
    caplog.set_level(logging.INFO, logger="alembic")
    command.downgrade(cfg, rev.down_revision)
    assert "kept 2 countries and 2 subdivisions: rows clients added or edited" in caplog.text
    with alembic_engine.connect() as conn:
        kept = conn.execute(
            text(
                "SELECT s.code, s.name, c.alpha2 FROM subdivision AS s "
                "JOIN country AS c ON c.id = s.country_id ORDER BY s.code"
            )
        ).all()
        countries = conn.scalars(text("SELECT alpha2 FROM country ORDER BY alpha2")).all()
    assert [tuple(row) for row in kept] == [
        ("DE-BY", EDIT, "DE"),
        ("FR-Q01", "A client's region", "FR"),
    ], "the client's and the edited subdivision are kept"
    assert countries == ["DE", "FR"], "untouched ISO countries are removed, used ones kept"
    command.upgrade(cfg, ISO_LOAD)
    with alembic_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM country")) == len(pycountry.countries)
        assert conn.scalar(text("SELECT id FROM country WHERE alpha2 = 'FR'")) == france
        subdivisions = conn.scalar(text("SELECT count(*) FROM subdivision"))
        assert subdivisions == len(ISO_SUBDIVISION_CODES) + 1
        assert conn.scalar(text("SELECT name FROM subdivision WHERE code = 'DE-BY'")) == EDIT

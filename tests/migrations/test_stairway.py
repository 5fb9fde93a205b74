"""A stairway: every revision up, down, up, on a fresh database, with rows seeded before
each step. Runs over whatever revisions alembic/versions holds."""

from collections.abc import Iterator

import pycountry
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, insert, select

from src.config import Settings
from tests.helpers import (
    config_for,
    current_version,
    revisions_in_order,
    schema_diff,
    schema_snapshot,
)


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


def seed_values(table: Table, conn) -> dict:
    """The next seed row for `country` as the table looks now."""
    taken = {row.alpha2 for row in conn.execute(select(table.c.alpha2))}
    known = next(c for c in seed_candidates() if c["alpha2"] not in taken)
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
                f"country.{column.name}: add it to seed_candidates()"
            )
    return values


class SeededRows:
    """Rows put in `country` before each step: every step must keep them and their values,
    except what it visibly drops (the table, or a column). Other rows are not watched."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.rows: dict[int, dict] = {}  # id -> the non-NULL values seen so far
        self.seeded = 0

    def table(self) -> Table | None:
        metadata = MetaData()
        metadata.reflect(self.engine, only=lambda name, _: name == "country")
        return metadata.tables.get("country")

    def seed(self, step: str) -> None:
        table = self.table()
        if table is None:
            return
        with self.engine.begin() as conn:
            values = seed_values(table, conn)
            key = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        self.seeded += 1
        self.rows[key] = {}
        self.check(f"seeding {values['alpha2']} before {step}")

    def check(self, step: str) -> None:
        table = self.table()
        if table is None:
            self.rows.clear()  # the step dropped the table: nothing left to keep
            return
        with self.engine.connect() as conn:
            now = {row["id"]: dict(row) for row in conn.execute(select(table)).mappings()}
        lost = sorted(set(self.rows) - set(now))
        assert not lost, f"{step} lost country rows {[self.rows[key] for key in lost]}"
        for key, kept in self.rows.items():
            row = now[key]
            for column in list(kept):
                if column not in row:
                    del kept[column]  # the step dropped the column, and its values with it
                else:
                    assert row[column] == kept[column], (
                        f"{step} changed country {key}.{column}: {kept[column]!r} -> "
                        f"{row[column]!r}"
                    )
            kept.update({column: value for column, value in row.items() if value is not None})


def test_stairway_up_down_up_keeps_schema_and_data(settings: Settings, alembic_engine: Engine):
    """For each revision in order: seed a row, upgrade, downgrade, upgrade.

    After the downgrade the schema is exactly what it was before the step (the downgrade
    undoes the upgrade), after the second upgrade it is what the first produced, and rows
    that existed before a step survive all three with their values, unless the step drops
    their table or column.
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
    assert data.seeded >= 1, "no step had a country table to seed"

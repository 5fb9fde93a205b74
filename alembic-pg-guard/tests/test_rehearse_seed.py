"""Rehearsal data that looks like a live table's: rows in random physical order, names of
real lengths sampled from the table's own rows. Values that follow the row order make a
plain CREATE INDEX look cheap (issue 22, #8)."""

from alembic_pg_guard._rehearse import seed
from sqlalchemy import Engine, text

REAL_NAMES = ["Île-de-France", "Bayern", "Provence-Alpes-Côte d'Azur", "Ain", "Lisboa"]


def correlations(engine: Engine, table: str) -> dict[str, float]:
    """pg_stats' correlation of each column: 1 when values follow the physical order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT attname, correlation FROM pg_stats WHERE tablename = :t"), {"t": table}
        )
        return {name: float(value) for name, value in rows}


def test_seeded_rows_are_in_random_order_and_sample_the_tables_own_values(engine: Engine):
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE area (id serial PRIMARY KEY, code varchar(6) NOT NULL UNIQUE, "
            "name varchar(200) NOT NULL, rank int)"
        )
        for i, name in enumerate(REAL_NAMES):
            conn.execute(
                text("INSERT INTO area (code, name) VALUES (:c, :n)"), {"c": f"R{i}", "n": name}
            )
    added = seed.fill(engine, 20_000)
    assert added == {"area": 20_000}
    found = correlations(engine, "area")
    assert abs(found["code"]) < 0.2, found  # unique codes: not in insertion order
    with engine.connect() as conn:
        real = conn.scalar(
            text("SELECT count(*) FROM area WHERE name = ANY(:names)"), {"names": REAL_NAMES}
        )
    assert real == 20_000 + len(REAL_NAMES)  # every name is one of the table's own


def test_an_empty_table_gets_names_of_varied_lengths_in_random_order(engine: Engine):
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE place (id serial PRIMARY KEY, code varchar(6) NOT NULL UNIQUE, "
            "name varchar(200) NOT NULL)"
        )
    seed.fill(engine, 20_000)
    found = correlations(engine, "place")
    assert abs(found["code"]) < 0.2 and abs(found["name"]) < 0.2, found
    with engine.connect() as conn:
        lengths = conn.scalar(text("SELECT count(DISTINCT length(name)) FROM place"))
    assert lengths >= 10

"""src/country/queries.py: what the country table's constraints mean in an answer."""

import pytest
from sqlalchemy import Engine, text


def countries(db: Engine) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM country ORDER BY id"))]


async def test_an_id_taken_behind_the_sequence_is_a_server_error_naming_the_primary_key(client, db):
    """Not a 409 about alpha2: the client's codes are free, the generated id is not."""
    with db.begin() as conn:  # the id the API's next insert gets, taken by a hand-written INSERT
        taken = conn.scalar(text("SELECT nextval(pg_get_serial_sequence('country', 'id')) + 1"))
        conn.execute(
            text("INSERT INTO country (id, alpha2, alpha3, name) VALUES (:id, 'XB', 'XBB', 'B')"),
            {"id": taken},
        )
    before = countries(db)
    new = {"alpha2": "XA", "alpha3": "XAA", "name": "Test Land"}
    with pytest.raises(Exception, match=r"^country_pkey violated by a new country: .*setval\("):
        await client.post("/country", json=new)  # the app's 500; this client re-raises for the log
    assert countries(db) == before

"""src/kit/bodies.py: a JSON body naming a key twice is refused, not read as its last value."""

import pytest
from sqlalchemy import Engine, text

JSON = {"content-type": "application/json"}


def countries(db: Engine, *codes: str) -> int:
    with db.connect() as conn:
        query = text("SELECT count(*) FROM country WHERE alpha2 = ANY(:codes)")
        return conn.scalar(query, {"codes": list(codes)})


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b'{"alpha2": "QV", "alpha2": "QW", "alpha3": "QVV", "name": "Dup"}', "alpha2"),
        (b'{"alpha2": "QV", "alpha3": "QVV", "name": "A", "name": "B"}', "name"),
    ],
)
async def test_a_duplicate_key_is_422_and_nothing_is_stored(client, db, content, key):
    response = await client.post("/country", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    (error,) = body["errors"]
    assert f"duplicate key {key!r}" in error["message"]
    assert countries(db, "QV", "QW") == 0


async def test_a_duplicate_key_in_a_patch_is_422(client, db):
    response = await client.patch(
        "/country/GB", content=b'{"name": "A", "name": "B"}', headers=JSON
    )
    assert response.status_code == 422, response.text
    assert "duplicate key 'name'" in response.json()["errors"][0]["message"]


async def test_unique_keys_are_still_read(client, db):
    content = b'{"alpha2": "QV", "alpha3": "QVV", "name": "Unique"}'
    response = await client.post("/country", content=content, headers=JSON)
    assert response.status_code == 201, response.text
    assert countries(db, "QV") == 1

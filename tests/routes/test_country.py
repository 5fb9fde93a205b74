from sqlalchemy import Engine, text

NEW = {"alpha2": "XA", "alpha3": "XAA", "name": "Test Land"}


def row(db: Engine, alpha2: str):
    with db.connect() as conn:
        return conn.execute(
            text("SELECT alpha2, alpha3, name FROM country WHERE alpha2 = :a"), {"a": alpha2}
        ).one_or_none()


async def test_create_then_get(client, db):
    created = await client.post("/country", json=NEW)
    assert created.status_code == 201, created.text
    assert created.json() == NEW
    assert tuple(row(db, "XA")) == ("XA", "XAA", "Test Land")

    fetched = await client.get("/country/xa")
    assert fetched.status_code == 200
    assert fetched.json() == NEW


async def test_create_normalises_codes_and_name(client, db):
    response = await client.post(
        "/country", json={"alpha2": " xb ", "alpha3": "xbb", "name": "  Spaced  "}
    )
    assert response.status_code == 201, response.text
    assert tuple(row(db, "XB")) == ("XB", "XBB", "Spaced")


async def test_duplicate_is_409_and_keeps_the_original(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    again = await client.post("/country", json=NEW | {"name": "Impostor"})
    assert again.status_code == 409
    body = again.json()
    assert body["code"] == "conflict"
    assert "XA" in body["detail"]
    assert tuple(row(db, "XA")) == ("XA", "XAA", "Test Land")


async def test_duplicate_alpha3_alone_is_409(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    other = await client.post("/country", json={"alpha2": "XC", "alpha3": "XAA", "name": "Other"})
    assert other.status_code == 409
    assert row(db, "XC") is None


async def test_unknown_code_is_404_json(client, db):
    response = await client.get("/country/QQ")
    assert response.status_code == 404
    assert response.json() == {"detail": "country 'QQ' not found", "code": "not_found"}


async def test_malformed_code_is_422(client, db):
    response = await client.get("/country/G1")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.code"


async def test_invalid_body_is_422_naming_fields(client, db):
    response = await client.post("/country", json={"alpha2": "XYZ", "name": ""})
    assert response.status_code == 422
    fields = {err["field"] for err in response.json()["errors"]}
    assert fields == {"body.alpha2", "body.alpha3", "body.name"}
    assert row(db, "XY") is None


async def test_unknown_field_and_control_characters_are_422(client, db):
    extra = await client.post("/country", json=NEW | {"id": 7})
    assert extra.status_code == 422
    assert extra.json()["errors"][0]["field"] == "body.id"
    control = await client.post("/country", json=NEW | {"name": "Bad\x00Name"})
    assert control.status_code == 422
    assert row(db, "XA") is None


async def test_malformed_json_is_422_not_500(client, db):
    response = await client.post(
        "/country", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"

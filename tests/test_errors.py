"""src/errors.py: one JSON error body, including for bugs (500), never plain text."""

import json

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from tests.helpers import API_KEY


@pytest.fixture
def country_table_gone(db: Engine):
    """The schema pulled from under the running app (as `db-reset --force` would)."""
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE country RENAME TO country_gone"))
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE country_gone RENAME TO country"))


async def test_an_unexpected_error_is_a_json_500_and_still_raised_for_the_log(
    app, country_table_gone
):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/country/GB")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "internal server error", "code": "internal_error"}
    # The server sees the exception after the response went out: that is what logs it.
    raising = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=raising, base_url="http://test") as client:
        with pytest.raises(Exception, match="country"):
            await client.get("/country/GB")


@pytest.fixture
def read_only_app_role(db: Engine):
    """Writes refused as a read-only server refuses them (a standby, or a primary being failed
    over): the app's session settings win over a role's default_transaction_read_only."""
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION read_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE 'cannot execute INSERT in a read-only transaction' "
            "USING ERRCODE = 'read_only_sql_transaction'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER read_only BEFORE INSERT ON country EXECUTE FUNCTION read_only()"
        )
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION read_only() CASCADE")


async def test_a_read_only_database_refusing_a_write_is_a_503(read_only_app_role, client):
    """SQLSTATE 25006 is the database being unable to take writes now, not a bug."""
    assert (await client.get("/country/GB")).status_code == 200
    response = await client.post("/country", json={"alpha2": "QR", "alpha3": "QRR", "name": "Q"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert response.json()["code"] == "service_unavailable"


WRONG_PASSWORD = "Zq9-rotated-elsewhere"


@pytest.mark.parametrize(
    "app", [{"postgres_app_password": SecretStr(WRONG_PASSWORD)}], indirect=True
)
async def test_a_refused_login_is_a_503_logged_once_naming_the_role(app, settings, log_lines):
    """A wrong or rotated POSTGRES_APP_PASSWORD (SQLSTATE 28P01) is an outage: 503 on
    every read and write, one error line naming the role, never the password."""
    lines = log_lines("json")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        answers = [
            await c.get("/country/GB"),
            await c.get("/country"),
            await c.post("/country", json={"alpha2": "QL", "alpha3": "QLL", "name": "Q"}),
            await c.get("/country/GB"),
        ]
        ready = await c.get("/ready")
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        assert response.json()["code"] == "service_unavailable"
    assert ready.status_code == 503
    logged = lines()
    assert not [line for line in logged if WRONG_PASSWORD in line]
    assert not [line for line in logged if "Traceback" in line]
    role = settings.postgres_app_user
    errors = [entry for entry in map(json.loads, logged) if entry["level"] == "error"]
    (refusal,) = [entry["message"] for entry in errors if role in entry["message"]]
    assert "POSTGRES_APP_PASSWORD" in refusal

"""src/errors.py: one JSON error body, including for bugs (500), never plain text."""

import httpx
import pytest
from sqlalchemy import Engine, text


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
def read_only_app_role(db: Engine, settings):
    """The API's role on a read-only server (a standby, or a primary being failed over)."""
    role = settings.postgres_app_user
    with db.begin() as conn:
        conn.exec_driver_sql(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql(f'ALTER ROLE "{role}" RESET default_transaction_read_only')


async def test_a_read_only_database_refusing_a_write_is_a_503(read_only_app_role, client):
    """SQLSTATE 25006 is the database being unable to take writes now, not a bug."""
    assert (await client.get("/country/GB")).status_code == 200
    response = await client.post("/country", json={"alpha2": "QR", "alpha3": "QRR", "name": "Q"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert response.json()["code"] == "service_unavailable"

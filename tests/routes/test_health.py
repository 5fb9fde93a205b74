from alembic_pg_guard import code_history
from sqlalchemy import text

from src.migrations import alembic_config


async def test_health_is_ok(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_the_head(client):
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.pop("cache") in {"subscribed", "not subscribed", "off"}  # test_cache.py
    assert body == {
        "status": "ready",
        "revision": ", ".join(sorted(code_history(alembic_config()).heads)),
    }


async def test_ready_is_503_when_schema_is_behind(client, db):
    with db.begin() as conn:
        head = conn.scalar(text("SELECT version_num FROM alembic_version"))
        conn.execute(text("UPDATE alembic_version SET version_num = 'c5e7ddd980eb'"))
    try:
        response = await client.get("/ready")
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert "c5e7ddd980eb" in body["detail"] and head in body["detail"]

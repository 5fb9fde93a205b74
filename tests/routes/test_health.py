from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from alembic_pg_guard import HISTORY_TABLE, code_history
from sqlalchemy import Engine, text

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


NEWER = "fe11e7000001"  # a revision this code does not have, as a newer release applies it


@contextmanager
def migrated_by_a_newer_release(db: Engine, down: str | None) -> Iterator[str]:
    """The database moved to NEWER on top of `down` (the code's head when None), its row
    recorded as the guard's runner records one; undone afterwards."""
    with db.begin() as conn:
        head = conn.scalar(text("SELECT version_num FROM alembic_version"))
        conn.execute(
            text(
                f"INSERT INTO {HISTORY_TABLE} (revision, down_revisions, chain_hash) "
                "VALUES (:r, :d, 'newer')"
            ),
            {"r": NEWER, "d": down or head},
        )
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
    try:
        yield head
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
            conn.execute(text(f"DELETE FROM {HISTORY_TABLE} WHERE revision = :r"), {"r": NEWER})


async def test_ready_while_the_database_is_ahead_of_the_code(client, db):
    """A rolling deploy: the new release migrated one revision on top of this code's head;
    this (old) replica stays ready, still naming its own revision."""
    with migrated_by_a_newer_release(db, None) as head:
        response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == head


@pytest.mark.parametrize("down", ["c5e7ddd980eb", "0000deadbeef"])
async def test_ready_is_503_when_the_database_diverged(client, db, down):
    """The database's newer head does not descend from the code's head (it branched off
    below it, or from a history the code never had)."""
    with migrated_by_a_newer_release(db, down) as head:
        response = await client.get("/ready")
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"schema mismatch: database at {NEWER}, code expects {head}"), detail
    assert "(diverged" in detail

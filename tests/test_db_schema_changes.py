"""src/db.py across a schema change: a column's type altered while the app serves (the
varchar widening a migration makes) leaves its pooled connections' prepared statements
stale; the request that meets one is retried on a fresh statement, never a 500."""

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from sqlalchemy import Engine, text

from src.config import Settings
from src.db import Database
from tests.helpers import API_KEY

# Every read reaches the database (a cached response would hide the stale statement).
NO_CACHE = pytest.mark.parametrize("app", [{"cache_enabled": False}], indirect=True)
Retype = Callable[[str], None]


def _retype(db: Engine, table: str, column: str, original: str) -> Iterator[Retype]:
    """`retype(new)` changes the column's type from another connection (committed, as
    `migrate` does); the original type comes back afterwards."""
    alter = f"ALTER TABLE {table} ALTER COLUMN {column} TYPE "

    def retype(new: str) -> None:
        with db.begin() as conn:
            conn.execute(text(alter + new))

    try:
        yield retype
    finally:
        retype(original)


@pytest.fixture
def retype_name(db: Engine) -> Iterator[Retype]:
    yield from _retype(db, "country", "name", "varchar(200)")


@pytest.fixture
def retype_version(db: Engine) -> Iterator[Retype]:
    yield from _retype(db, "alembic_version", "version_num", "varchar(32)")


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """A writer that gets the app's 500 as a response, as a real client would."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
        yield c


@NO_CACHE
@pytest.mark.parametrize("path", ["/country/GB", "/country?limit=2&q=united"])
async def test_a_read_after_a_column_type_change_answers_the_same(client, retype_name, path):
    before = await client.get(path)  # its statement is now prepared on the pooled connection
    assert before.status_code == 200
    retype_name("varchar(300)")
    after = await client.get(path)
    assert (after.status_code, after.json()) == (200, before.json()), after.text


@NO_CACHE
async def test_a_create_after_a_column_type_change_commits_once(client, retype_name):
    """POST's INSERT ... RETURNING fails, first in its transaction: the write runs again."""
    assert (await client.post("/country", json=_new("XA"))).status_code == 201
    retype_name("varchar(300)")
    created = await client.post("/country", json=_new("XB"))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "New XB"
    listed = (await client.get("/country?q=New X")).json()["items"]
    assert [c["alpha2"] for c in listed] == ["XA", "XB"]


@NO_CACHE
async def test_a_conditional_change_after_a_column_type_change_applies(client, retype_name):
    """PATCH with If-Match reads the country FOR UPDATE in its transaction: that read fails,
    so the transaction is aborted; it runs again from its start."""
    assert (await client.post("/country", json=_new("XA"))).status_code == 201
    etag = (await client.get("/country/XA")).headers["etag"]
    patched = await client.patch("/country/XA", json={"name": "A1"}, headers={"If-Match": etag})
    assert patched.status_code == 204
    etag = (await client.get("/country/XA")).headers["etag"]
    retype_name("varchar(300)")
    patched = await client.patch("/country/XA", json={"name": "A2"}, headers={"If-Match": etag})
    assert patched.status_code == 204, patched.text
    assert (await client.get("/country/XA")).json()["name"] == "A2"


async def test_ready_after_the_version_table_changes_type(client, retype_version):
    assert (await client.get("/ready")).status_code == 200
    retype_version("varchar(64)")
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text


async def test_a_unit_of_work_is_retried_from_its_start(settings: Settings, db, retype_name):
    """What the first attempt wrote before its statement failed is rolled back: one row."""
    database = Database(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    insert = text("INSERT INTO country (alpha2, alpha3, name) VALUES ('XC', 'XCC', 'C')")
    read_gb = text("SELECT name FROM country WHERE alpha2 = 'GB'")

    async def insert_then_read(db) -> str:
        await db.execute(insert)
        return await db.scalar(read_gb)

    try:
        assert await database.read(lambda reads: reads.scalar(read_gb)) == "United Kingdom"
        retype_name("varchar(300)")
        assert await database.write(insert_then_read) == "United Kingdom"
    finally:
        await database.dispose()
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XC'")) == 1


def _new(alpha2: str) -> dict[str, str]:
    return {"alpha2": alpha2, "alpha3": alpha2 + "X", "name": f"New {alpha2}"}

"""src/db.py: the Database across an outage (503, then recovery without restart), server-
side closes, and transactions that leave nothing behind."""

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from src.config import Settings
from src.db import Database
from tests.helpers import API_KEY

# The pool pre-ping off (the default) and on: the app must recover either way.
BOTH_PRE_PINGS = pytest.mark.parametrize(
    "app",
    [{"db_pool_pre_ping": False}, {"db_pool_pre_ping": True}],
    ids=["no-pre-ping", "pre-ping"],
    indirect=True,
)


@BOTH_PRE_PINGS
async def test_outage_gives_503_then_recovers_without_restart(anon, pg_cluster, db):
    if pg_cluster is None:
        pytest.skip("needs the embedded cluster (TEST_DATABASE_URL is not ours to stop)")
    for _ in range(3):  # the pool now holds connections that the restart will close
        assert (await anon.get("/country/GB")).status_code == 200
    pg_cluster.stop()
    try:
        for path in ("/country/GB", "/country", "/country/GB/subdivisions"):
            response = await anon.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.json() == {
                "detail": "database unavailable, retry shortly",
                "code": "service_unavailable",
            }
            assert response.headers["retry-after"] == "5"
        written = await anon.post(
            "/country",
            json={"alpha2": "XA", "alpha3": "XAA", "name": "Down"},
            headers={"X-API-Key": API_KEY},
        )
        assert written.status_code == 503
        ready = await anon.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "database unavailable"
        assert (await anon.get("/health")).status_code == 200
    finally:
        pg_cluster.start()
    for _ in range(3):
        response = await anon.get("/country/GB")
        assert response.status_code == 200
        assert response.json()["alpha3"] == "GBR"
    assert (await anon.get("/ready")).status_code == 200


@BOTH_PRE_PINGS
async def test_connections_closed_by_the_server_are_replaced_before_use(anon, db):
    """Server-side closes (pg_terminate_backend, idle timeouts, a restart) fail no request,
    with or without the pre-ping: asyncpg sees the socket close, the pool swaps it."""
    for _ in range(3):
        assert (await anon.get("/country/GB")).status_code == 200
    with db.connect() as conn:
        terminated = conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        )
    assert terminated >= 1
    await asyncio.sleep(0.2)  # the FIN reaches the event loop, as it would between requests
    for path in ("/country/GB", "/country", "/country/FR/subdivisions", "/ready"):
        response = await anon.get(path)
        assert response.status_code == 200, (path, response.text)


@pytest.fixture
async def one_connection(settings: Settings, db):
    """A Database on a pool of one connection: whatever a call leaves on it, the next
    call gets."""
    database = Database(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_failed_write_is_rolled_back_and_its_connection_reused_clean(
    one_connection: Database, db
):
    insert_xq = text("INSERT INTO country (alpha2, alpha3, name) VALUES ('XQ', 'XQQ', 'Gone')")

    def insert_then_fail(conn):
        conn.execute(insert_xq)
        raise RuntimeError("the route failed after writing")

    with pytest.raises(RuntimeError):
        await one_connection.write(insert_then_fail)
    duplicate = text("INSERT INTO country (alpha2, alpha3, name) VALUES ('GB', 'GBX', 'Dup')")
    with pytest.raises(IntegrityError):
        await one_connection.write(lambda conn: conn.execute(duplicate))

    # The one pooled connection is back in the pool, outside any transaction, and reads
    # on it work; nothing of either write was kept.
    with db.connect() as conn:
        open_transactions = conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        )
        assert open_transactions == 0
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XQ'")) == 0
    assert await one_connection.read(lambda conn: conn.scalar(text("SELECT 1"))) == 1
    kept = await one_connection.write(lambda conn: conn.execute(insert_xq).rowcount)
    assert kept == 1
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XQ'")) == 1


async def test_reads_do_not_open_transactions_and_writes_do(one_connection: Database, db):
    """Which engine is which: each read statement is its own transaction (autocommit),
    a write's statements share one (now() is the transaction's start time)."""

    def same_transaction(conn) -> bool:
        first = conn.scalar(text("SELECT now()"))
        conn.execute(text("SELECT pg_sleep(0.01)"))
        return first == conn.scalar(text("SELECT now()"))

    assert await one_connection.read(same_transaction) is False
    assert await one_connection.write(same_transaction) is True

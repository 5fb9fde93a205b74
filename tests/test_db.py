"""src/db.py: the Database across an outage (503, then recovery without restart), server-
side closes, and transactions that leave nothing behind."""

import asyncio
import subprocess
import sys

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT, Settings
from src.db import Database
from tests.helpers import (
    API_KEY,
    APP_ROLE,
    APP_ROLE_PASSWORD,
    child_env,
    idle_in_transaction,
    pgbouncer,
    wait_for,
)

# The pool pre-ping off (the default) and on: the app must recover either way.
BOTH_PRE_PINGS = pytest.mark.parametrize(
    "app",
    [{"db_pool_pre_ping": False}, {"db_pool_pre_ping": True}],
    ids=["no-pre-ping", "pre-ping"],
    indirect=True,
)


@pytest.mark.slow
@BOTH_PRE_PINGS
async def test_outage_gives_503_then_recovers_without_restart(anon, pg_cluster, db):
    if pg_cluster is None:
        pytest.skip("needs the embedded cluster (TEST_DATABASE_URL is not ours to stop)")
    for _ in range(3):  # the pool now holds connections that the restart will close
        assert (await anon.get("/country/GB")).status_code == 200
    pg_cluster.stop()
    # The FIN reaches the event loop, as it would between requests: the response cache's
    # LISTEN connection is gone, so reads bypass it (src/kit/cache.py) and meet the outage.
    await asyncio.sleep(0.2)
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

    async def insert_then_fail(db):
        await db.execute(insert_xq)
        raise RuntimeError("the route failed after writing")

    with pytest.raises(RuntimeError):
        await one_connection.write(insert_then_fail)
    duplicate = text("INSERT INTO country (alpha2, alpha3, name) VALUES ('GB', 'GBX', 'Dup')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await one_connection.write(lambda db: db.execute(duplicate))

    # The one pooled connection is back in the pool, outside any transaction, and reads
    # on it work; nothing of either write was kept.
    with db.connect() as conn:
        assert idle_in_transaction(conn) == 0
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XQ'")) == 0
    assert await one_connection.read(lambda reads: reads.scalar(text("SELECT 1"))) == 1
    kept = await one_connection.write(lambda db: db.execute(insert_xq))
    assert kept == 1
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XQ'")) == 1


async def test_reads_do_not_open_transactions_and_writes_do(one_connection: Database, db):
    """Which engine is which: each read statement is its own transaction (autocommit),
    a write's statements share one (now() is the transaction's start time)."""

    async def same_transaction(db) -> bool:
        first = await db.scalar(text("SELECT now()"))
        await db.scalar(text("SELECT pg_sleep(0.01)"))
        return first == await db.scalar(text("SELECT now()"))

    assert await one_connection.read(same_transaction) is False
    assert await one_connection.write(same_transaction) is True


def serve_app(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """The app in its own process (`uvicorn src.main:app`, without the image's
    `python -m src.serve` edge limits, which this test does not need), on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.main:app", "--port", str(port), "--no-access-log"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would fill up and stall the server
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", proc)
    return proc, url


@pytest.mark.slow
@pytest.mark.parametrize("pooler_setting", [True, False], ids=["DB_TRANSACTION_POOLER", "unset"])
async def test_several_apps_through_pgbouncer_in_transaction_mode(
    settings: Settings, migrated, pooler_setting: bool
):
    """Two API processes behind a real transaction-pooling PgBouncer (1.18: no prepared
    statement support), under concurrent reads and writes. With DB_TRANSACTION_POOLER
    every answer is right and every write is kept; without it asyncpg's prepared
    statements meet other server connections and requests fail."""
    server = settings.sync_url
    with pgbouncer(server, {APP_ROLE: APP_ROLE_PASSWORD}, pool_mode="transaction") as port:
        app_url = f"postgresql://{APP_ROLE}:{APP_ROLE_PASSWORD}@127.0.0.1:{port}/{server.database}"
        env = child_env(
            server.render_as_string(hide_password=False),
            APP_DATABASE_URL=app_url,
            DB_TRANSACTION_POOLER=str(pooler_setting).lower(),
            DB_POOL_SIZE="4",
        )
        procs = [serve_app(env) for _ in range(2)]
        with migrated.connect() as conn:
            taken = set(conn.scalars(text("SELECT alpha2 FROM country")))
        codes = [c for c in (f"X{a}" for a in "ABCDEFGHIJLMNOPQRSTUVWYZ") if c not in taken]
        try:
            async with httpx.AsyncClient(timeout=30, headers={"X-API-Key": API_KEY}) as client:

                async def status(method: str, url: str, **kwargs) -> int:
                    try:
                        return (await client.request(method, url, **kwargs)).status_code
                    except httpx.TransportError:  # a connection closed after a 500
                        return 0

                async def reads(url: str) -> list[int]:
                    paths = [
                        "/country/FR",
                        "/country?limit=5",
                        "/country/GB/subdivisions",
                        "/ready",
                    ]
                    return [await status("GET", url + p) for p in paths * 10]

                async def write(url: str, alpha2: str) -> int:
                    body = {"alpha2": alpha2, "alpha3": f"{alpha2}X", "name": "Pooled"}
                    return await status("POST", url + "/country", json=body)

                urls = [url for _, url in procs]
                results = await asyncio.gather(
                    *(reads(url) for url in urls for _ in range(4)),
                    *(write(urls[i % 2], code) for i, code in enumerate(codes)),
                )
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(timeout=20)
        statuses = [s for r in results for s in (r if isinstance(r, list) else [r])]
        with migrated.begin() as conn:
            kept = set(
                conn.scalars(
                    text("SELECT alpha2 FROM country WHERE alpha2 = ANY(:c)"), {"c": codes}
                )
            )
            conn.execute(text("DELETE FROM country WHERE alpha2 = ANY(:c)"), {"c": codes})
        written = [code for code, s in zip(codes, results[-len(codes) :], strict=True) if s == 201]
        if pooler_setting:
            assert set(statuses) <= {200, 201}, sorted(set(statuses))
            assert kept >= set(codes)
        else:
            assert not set(statuses) <= {200, 201}, "expected failures without the setting"
        assert kept >= set(written)  # a write answered 201 is never lost


async def test_overflow_connections_are_closed_on_the_server_when_returned(
    settings: Settings, db, caplog: pytest.LogCaptureFixture
):
    """Past DB_POOL_SIZE the pool closes what comes back: asyncpg's close must be awaited,
    or the server keeps the session (and the pool logs MissingGreenlet)."""
    # The gate lets 3 in (one connection is kept for /ready's probe): 1 pooled, 2 overflow.
    database = Database(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 3}))

    async def three_at_once() -> set[int]:
        inside, all_in = [], asyncio.Event()

        async def hold(reads) -> int:
            inside.append(pid := await reads.scalar(text("SELECT pg_backend_pid()")))
            if len(inside) == 3:
                all_in.set()
            await all_in.wait()
            return pid

        async with asyncio.timeout(10):
            return set(await asyncio.gather(*(database.read(hold) for _ in range(3))))

    try:
        pids = await three_at_once()
        assert len(pids) == 3
        with db.connect() as conn:
            alive = conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)},
            )
        assert alive == 1  # the one the pool keeps
        assert database.autocommit.pool.checkedin() == 1
        assert "Exception closing connection" not in caplog.text
        assert len(await three_at_once()) == 3  # and it still serves its overflow
    finally:
        await database.dispose()

"""The app's engine across a database outage: 503 while down, recovery without restart."""

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from src.config import get_settings
from src.main import create_app


@pytest.fixture(params=[False, True], ids=["no-pre-ping", "pre-ping"])
async def anon(request, db):
    """An app with the pool pre-ping off (the default) and on: both must recover."""
    settings = get_settings().model_copy(update={"db_pool_pre_ping": request.param})
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


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
            headers={"X-API-Key": "test-api-key-0123456789"},
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

"""The app's engine across a database outage: 503 while down, recovery without restart."""

import pytest


async def test_outage_gives_503_then_recovers_without_restart(anon, pg_cluster, db):
    if pg_cluster is None:
        pytest.skip("needs the embedded cluster (TEST_DATABASE_URL is not ours to stop)")
    assert (await anon.get("/country/GB")).status_code == 200  # pool now holds a connection
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

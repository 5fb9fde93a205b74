"""Graceful drain of `python -m src.serve` on SIGTERM (src/drain.py), as a real process on
the test database: requests held in flight by row locks the test holds, keep-alive
connections left open, raw sockets to see every byte, close and reset."""

import json
import signal
import socket

import pytest
from sqlalchemy import Engine, text

from tests.helpers import API_KEY, eventually
from tests.test_serve import PATIENCE_SECONDS, Served, read_response, served

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def lock_waiters(db: Engine) -> int:
    """Backends waiting on a lock now (a new transaction: its statistics are a snapshot)."""
    with db.connect() as conn:
        return conn.scalar(LOCK_WAITERS) or 0


def request(method: str, path: str, body: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


def closed_cleanly(sock: socket.socket) -> bool:
    """The server closed `sock` with a FIN after its answer: EOF, not a reset."""
    sock.settimeout(PATIENCE_SECONDS)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return False


def refuses_connections(server: Served) -> bool:
    """The listener is closed: the server is shutting down (the drain flag is up)."""
    try:
        server.connect().close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_open_connections_without_a_reset(db, database_url):
    """After SIGTERM: /ready and new requests on open keep-alive connections get 503 with
    Retry-After, the JSON body and `Connection: close`; the two writes in flight finish
    (201/204) with `Connection: close`; every connection ends with a FIN; the exit is 0."""
    with served(
        database_url, KEEP_ALIVE_TIMEOUT_SECONDS="60", REQUEST_READ_TIMEOUT_SECONDS="60"
    ) as server:
        with server.connect() as setup:
            for code, code3 in (("XD", "XDD"), ("XE", "XEE")):
                setup.sendall(
                    request(
                        "POST", "/country", {"alpha2": code, "alpha3": code3, "name": "Drainland"}
                    )
                )
                assert read_response(setup)[0] == 201
        idle = [server.connect() for _ in range(3)]
        for sock in idle:  # keep-alive connections with a request answered
            sock.sendall(request("GET", "/health"))
            status, headers, _ = read_response(sock)
            assert status == 200 and headers.get("connection") != "close"
        writers = [server.connect() for _ in range(2)]
        with db.connect() as locker:
            locker.execute(text("SELECT 1 FROM country WHERE alpha2 IN ('XD', 'XE') FOR UPDATE"))
            for sock, code in zip(writers, ("XD", "XE"), strict=True):
                sock.sendall(request("PATCH", f"/country/{code}", {"official_name": "Held"}))
            eventually(lambda: lock_waiters(db) == 2, "both writes wait on a lock")

            server.proc.send_signal(signal.SIGTERM)
            eventually(lambda: refuses_connections(server), "the server shuts down")

            ready, new_write, health = idle
            ready.sendall(request("GET", "/ready"))
            new_write.sendall(
                request("POST", "/country", {"alpha2": "XF", "alpha3": "XFF", "name": "Late"})
            )
            health.sendall(request("GET", "/health"))
            for sock in (ready, new_write):
                status, headers, body = read_response(sock)
                assert status == 503
                assert headers["retry-after"].isdigit()
                assert headers["connection"] == "close"
                assert json.loads(body)["code"] == "service_unavailable"
                assert closed_cleanly(sock)
            status, headers, _ = read_response(health)
            assert status == 200 and headers["connection"] == "close"
            assert closed_cleanly(health)
            locker.rollback()  # the writes in flight go on

        for sock in writers:
            status, headers, _ = read_response(sock)
            assert status == 204
            assert headers["connection"] == "close"
            assert closed_cleanly(sock)
        assert server.proc.wait(timeout=PATIENCE_SECONDS) == 0
        for sock in idle + writers:
            sock.close()
    with db.connect() as conn:
        names = conn.execute(
            text("SELECT alpha2, official_name FROM country WHERE alpha2 IN ('XD', 'XE', 'XF')")
        )
        assert dict(names.all()) == {"XD": "Held", "XE": "Held"}  # XF was refused, not written

"""The HTTP edge of `python -m src.serve` (what the image, compose, `start` and `dev` run),
as a real server process on a free port against the test database: oversized headers,
slow and idle connections, overload. Raw sockets: an HTTP client would not misbehave."""

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT
from tests.helpers import API_KEY, child_env, eventually, one_line_failure, wait_for

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

MB = 1024 * 1024
# Generous: these bound a wait for something that must happen, they assert no duration.
PATIENCE_SECONDS = 30


@dataclass
class Served:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE_SECONDS)


@contextmanager
def served(database_url: str, **settings: str) -> Iterator[Served]:
    port = free_port()
    env = child_env(database_url, API_HOST="127.0.0.1", API_PORT=str(port), **settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.serve"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would fill up and stall the server
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc)
        yield Served(proc, port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def server(migrated, database_url: str) -> Iterator[Served]:
    with served(database_url) as server:
        yield server


def read_response(sock: socket.socket) -> tuple[int | None, dict[str, str], bytes]:
    """Status, headers and body of the one response on `sock` (None: closed, no answer)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if b"\r\n\r\n" not in data:
        return None, {}, b""
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", 0))
    try:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    return int(lines[0].split()[1]), headers, body


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server still takes: it may stop reading once it has refused."""
    try:
        for start in range(0, len(data), 65536):
            sock.sendall(data[start : start + 65536])
    except OSError:
        pass


def is_closed(sock: socket.socket) -> bool:
    """The server closed `sock` (EOF or reset); what it sent before is drained."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_a_20mb_header_gets_431_and_is_not_buffered(server):
    """8 connections each sending a 1 MB, then a 20 MB header line: the server's RSS does
    not grow with the header's size (before: it held every byte until the header ended)."""
    rss = {}
    answers = {}
    for size in (1 * MB, 20 * MB):
        socks = [server.connect() for _ in range(8)]
        for sock in socks:
            send_quietly(sock, b"GET /country/GB HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size)
        rss[size] = server.rss_bytes()
        answers[size] = [read_response(sock) for sock in socks]
        for sock in socks:
            sock.close()
    growth = rss[20 * MB] - rss[1 * MB]
    assert growth < 32 * MB, f"RSS grew {growth / MB:.0f} MB from 1 MB to 20 MB headers"
    for status, headers, body in answers[1 * MB] + answers[20 * MB]:
        assert status == 431
        assert json.loads(body)["code"] == "request_header_fields_too_large"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * 200_000},
        {f"X-H{i}": "v" for i in range(2000)},
        {"X-Big": "a" * 17_000},
    ],
    ids=["200KB-header", "2000-headers", "17KB-header"],
)
def test_headers_over_the_limit_get_431_in_one_write(server, headers):
    """Also when the whole oversized header section arrives at once (the parser has it)."""
    with server.connect() as sock:
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        send_quietly(sock, f"GET /country/GB HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        status, _, body = read_response(sock)
    assert status == 431
    assert "16384 bytes" in json.loads(body)["detail"]


def test_headers_under_the_limit_are_served(server):
    answer = httpx.get(f"{server.url}/country/GB", headers={"X-Big": "a" * 15_000})
    assert answer.status_code == 200
    # A body after the headers, in the same write, is no header.
    body = json.dumps({"alpha2": "XE", "alpha3": "XEE", "name": "E" * 60}).encode()
    headers = {"X-API-Key": API_KEY, "X-Pad": "p" * 15_000}
    answer = httpx.post(f"{server.url}/country", content=body * 1, headers=headers)
    assert answer.status_code in (201, 415, 422), answer.text  # judged by the app, not 431


def test_slow_and_silent_connections_are_closed(migrated, database_url):
    """Slowloris (one byte now and then), a connection that sends nothing, and a body
    shorter than its Content-Length are all closed once the read timeout has passed."""
    with served(database_url, REQUEST_READ_TIMEOUT_SECONDS="1") as server:
        request = b"GET /country/GB HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000
        slow = [server.connect() for _ in range(20)]
        silent = server.connect()
        short_body = server.connect()
        short_body.sendall(
            b"POST /country HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        open_ = set(range(len(slow)))
        deadline = time.monotonic() + PATIENCE_SECONDS
        sent = 0
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                if is_closed(slow[i]):
                    open_.discard(i)
                    continue
                try:
                    slow[i].send(request[sent : sent + 1])
                except OSError:
                    open_.discard(i)
            sent += 1
            time.sleep(0.3)
        assert not open_, f"{len(open_)} of {len(slow)} slowloris connections still open"
        for sock in (silent, short_body):
            sock.settimeout(PATIENCE_SECONDS)
            status, _, _ = read_response(sock)
            assert status in (None, 408)
            assert is_closed(sock)
        # The server still serves.
        assert httpx.get(f"{server.url}/country/GB").status_code == 200


def test_an_unfinished_request_gets_408(migrated, database_url):
    with served(database_url, REQUEST_READ_TIMEOUT_SECONDS="1") as server:
        with server.connect() as sock:
            sock.sendall(b"GET /country/GB HTTP/1.1\r\n")
            status, headers, body = read_response(sock)
    assert status == 408
    assert json.loads(body)["code"] == "request_timeout"
    assert headers["connection"] == "close"


def test_idle_keep_alive_connections_are_closed(migrated, database_url):
    with served(database_url, KEEP_ALIVE_TIMEOUT_SECONDS="1") as server:
        with server.connect() as sock:
            sock.sendall(b"GET /country/GB HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert status == 200
            assert headers.get("connection") != "close"
            sock.settimeout(PATIENCE_SECONDS)
            assert sock.recv(1) == b""  # closed by the server, not by our timeout


def test_past_the_concurrency_limit_requests_get_a_fast_503(db, database_url):
    """Two requests held in flight (bodies not sent yet) fill a limit of 2: further
    requests are refused at once with Retry-After and the JSON error body; /health is
    still answered; once the two finish, requests are served again."""
    with served(
        database_url, MAX_CONCURRENT_REQUESTS="2", REQUEST_READ_TIMEOUT_SECONDS="60"
    ) as server:
        held = [server.connect() for _ in range(2)]
        body = json.dumps({"alpha2": "XB", "alpha3": "XBB", "name": "Busyland"}).encode()
        for sock in held:
            sock.sendall(
                b"POST /country HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"X-API-Key: " + API_KEY.encode() + b"\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
        deadline = time.monotonic() + PATIENCE_SECONDS
        answer = httpx.get(f"{server.url}/country/GB")
        while answer.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)  # the held requests have not reached the app yet
            answer = httpx.get(f"{server.url}/country/GB")
        assert answer.status_code == 503, "no request was refused past the limit"
        assert answer.headers["retry-after"].isdigit()
        assert answer.headers["x-request-id"]
        assert answer.json()["code"] == "service_unavailable"
        assert answer.headers["x-content-type-options"] == "nosniff"
        with httpx.Client(base_url=server.url) as client:
            assert {client.get("/country/FR").status_code for _ in range(20)} == {503}
            assert client.get("/health").status_code == 200
        for sock in held:
            sock.sendall(body)
        statuses = [read_response(sock)[0] for sock in held]
        assert sorted(statuses) == [201, 409]
        for sock in held:
            sock.close()
        assert httpx.get(f"{server.url}/country/XB").status_code == 200


@pytest.mark.parametrize("name", ["MAX_HEADER_BYTES", "REQUEST_READ_TIMEOUT_SECONDS"])
def test_a_bad_limit_is_one_line(name):
    proc = subprocess.run(
        [sys.executable, "-m", "src.serve"],
        cwd=PROJECT_ROOT,
        env=child_env(**{name: "abc"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert name in one_line_failure(proc)


MALFORMED = {
    "CL+TE": b"POST /country HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-CL": b"POST /country HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    "obs-fold": b"GET /country/GB HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-LF": b"GET /country/GB HTTP/1.1\nHost: x\n\n",
    "bad-method": b"G@T /country/GB HTTP/1.1\r\nHost: x\r\n\r\n",
    "no-Host": b"GET /country/GB HTTP/1.1\r\n\r\n",
}


def test_malformed_requests_get_400_with_the_json_body(server):
    """What the parser refuses, and HTTP/1.1 without a Host (RFC 9112): 400 with the JSON
    error body, nosniff and a request ID (before: uvicorn's plain text, or 200 for no Host)."""
    for case, request in MALFORMED.items():
        with server.connect() as sock:
            send_quietly(sock, request)
            status, headers, body = read_response(sock)
        assert status == 400, case
        assert headers["content-type"] == "application/json", case
        assert json.loads(body)["code"] == "bad_request", case
        assert headers["x-content-type-options"] == "nosniff" and headers["x-request-id"], case


def get_on(sock: socket.socket, path: str = "/country/GB") -> tuple[int | None, dict, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_response(sock)


def assert_canned_503(status: int | None, headers: dict[str, str], body: bytes) -> None:
    """The answer of a connection past MAX_CONNECTIONS: JSON 503, Retry-After, closing."""
    assert status == 503
    assert headers["retry-after"].isdigit()
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert json.loads(body)["code"] == "service_unavailable"


def served_connection(server) -> socket.socket | None:
    """A connection that was just served a GET (None, closed, if it was not: the start-up
    probe's connection may not be gone yet, so callers retry)."""
    sock = server.connect()
    if get_on(sock)[0] == 200:
        return sock
    sock.close()
    return None


def test_past_max_connections_a_connection_gets_a_canned_503(migrated, database_url):
    """MAX_CONNECTIONS=3 and three idle keep-alive connections: a fourth gets 503 with
    Retry-After and the JSON error body, and is closed; the three are still served, and
    once one closes, a new connection is served (before: every connection was served)."""
    with served(database_url, MAX_CONNECTIONS="3", KEEP_ALIVE_TIMEOUT_SECONDS="60") as server:
        held = [eventually(lambda: served_connection(server), "a served one") for _ in range(3)]
        with server.connect() as fourth:
            assert_canned_503(*get_on(fourth))
            fourth.settimeout(PATIENCE_SECONDS)
            assert is_closed(fourth) or fourth.recv(1) == b""  # closed by the server
        assert [get_on(sock)[0] for sock in held] == [200, 200, 200]
        held.pop().close()
        replacement = eventually(
            lambda: served_connection(server), "a connection served after one closed"
        )
        assert get_on(replacement, "/country/FR")[0] == 200
        for sock in [*held, replacement]:
            sock.close()


def read_pipelined(sock: socket.socket, expected: int, statuses: list[list[int]]) -> None:
    """Read `expected` pipelined responses on `sock`, appending each one's status as it comes
    (statuses[-1] grows while the server still answers them)."""
    data = bytearray()
    seen: list[int] = []
    statuses.append(seen)
    while len(seen) < expected:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
        while (end := data.find(b"\r\n\r\n")) != -1:
            head = bytes(data[:end]).decode("latin-1")
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            if len(data) < end + 4 + length:
                break
            del data[: end + 4 + length]
            seen.append(int(head.split()[1]))


def test_past_max_connections_refusals_do_not_wait_for_the_busy_loop(migrated, database_url):
    """The connections under the cap keep the server busy (pipelined requests, one per
    connection per loop turn); 300 more connect: each gets the canned 503 (Retry-After, JSON
    body) while the busy ones' requests are still being answered, not after them (before:
    uvloop's libuv accepted one connection per loop turn, so the refused ones waited behind
    the others' work, seconds under load). Then the held connections are still served."""
    held_count, depth, refused_count = 40, 100, 300
    with served(
        database_url,
        MAX_CONNECTIONS=str(held_count),
        KEEP_ALIVE_TIMEOUT_SECONDS="60",
    ) as server:
        held = [
            eventually(lambda: served_connection(server), "a served one") for _ in range(held_count)
        ]
        pipeline = b"GET /country/GB HTTP/1.1\r\nHost: x\r\n\r\n" * depth
        statuses: list[list[int]] = []
        readers = [
            threading.Thread(target=read_pipelined, args=(sock, depth, statuses)) for sock in held
        ]
        for sock, reader in zip(held, readers, strict=True):
            sock.sendall(pipeline)
            reader.start()
        refused = [server.connect() for _ in range(refused_count)]
        for sock in refused:
            send_quietly(sock, b"GET /country/GB HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [read_response(sock) for sock in refused]
        busy_answered = sum(len(seen) for seen in statuses)
        for reader in readers:
            reader.join(PATIENCE_SECONDS)
        for answer in answers:
            assert_canned_503(*answer)
        for sock in refused:
            sock.settimeout(PATIENCE_SECONDS)
            assert is_closed(sock) or sock.recv(1) == b""  # closed by the server
            sock.close()
        assert [set(seen) for seen in statuses] == [{200}] * held_count
        assert sum(len(seen) for seen in statuses) == held_count * depth
        # The refusals came while the held connections' requests were still being answered.
        assert busy_answered < held_count * depth, "the 503s came after all the busy work"
        assert {get_on(sock)[0] for sock in held} == {200}
        for sock in held:
            sock.close()


def test_a_refused_client_still_sending_reads_its_503(migrated, database_url):
    """Past MAX_CONNECTIONS, a client that sends its whole request (a 16 MB body) before it
    reads, as most HTTP clients do, can send it all and then reads the 503: the server drops
    what it sends, then closes (closing on unread input resets the connection: the client's
    send fails, and it never reads the answer)."""
    with served(database_url, MAX_CONNECTIONS="1", KEEP_ALIVE_TIMEOUT_SECONDS="60") as server:
        held = eventually(lambda: served_connection(server), "a served connection")
        body = b"{" + b" " * (16 * MB) + b"}"  # more than sockets buffer
        with server.connect() as refused:
            refused.sendall(
                b"POST /country HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            status, headers, answer = read_response(refused)
            assert status == 503
            assert headers["retry-after"].isdigit()
            assert json.loads(answer)["code"] == "service_unavailable"
        assert get_on(held)[0] == 200
        held.close()

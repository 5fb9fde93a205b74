"""src/logs.py: a request ID on every answer and in every log line of that request."""

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT, Settings
from src.drain import Drain
from src.edge import Edge
from src.logs import UNSAFE, configure_logging, flush_access, log_access
from tests.helpers import child_env, eventually, wait_for

# A forged access line after %0A, then CR, ESC (a terminal colour) and U+2028 (a line
# separator to str.splitlines and JavaScript).
FORGED_PATH = (
    "/nowhere%0A2026-01-01T00:00:00.000000Z%20%5Binfo%20%20%20%20%20%5D%20POST%20/country"
    "%20201%20FORGED%0D%1B%5B31m%E2%80%A8"
)


@contextmanager
def logging_server(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    """`python *args` serving on `port`, its stderr in `log`, until the block ends."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", proc)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def by_logger(lines: list[str]) -> dict[str, dict]:
    return {record["logger"]: record for record in map(json.loads, lines)}


async def test_a_valid_request_id_is_echoed_and_in_the_access_line(client, log_lines):
    lines = log_lines("json")
    response = await client.get("/country/GB", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"
    (line,) = [json.loads(line) for line in lines() if '"src.access"' in line]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/country/{code}", 200)
    assert line["request_id"] == "trace-42.a:b"
    assert line["duration_ms"] >= 0 and line["client"]
    assert (line["level"], line["message"]) == ("info", "GET /country/GB 200")
    assert line["timestamp"].endswith("Z")


@pytest.mark.parametrize("given", [None, "x" * 129, "no spaces please", "semi;colon", ""])
async def test_a_missing_or_malformed_request_id_is_replaced(client, given):
    headers = {} if given is None else {"X-Request-ID": given}
    response = await client.get("/country/GB", headers=headers)
    assert response.headers["x-request-id"] != (given or "")
    assert len(response.headers["x-request-id"]) == 32  # a fresh uuid4


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("PUT", "/country/GB", 405), ("GET", "/country?limit=0", 422)],
)
async def test_errors_carry_the_request_id_too(client, method, path, status, log_lines):
    lines = log_lines("json")
    response = await client.request(method, path, headers={"X-Request-ID": "err-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "err-1"
    access = by_logger(lines())["src.access"]
    assert (access["status"], access["request_id"]) == (status, "err-1")


async def test_log_lines_made_during_a_request_carry_its_id(log_lines):
    """Stdlib records made while a request runs carry its ID; outside one, "-"."""

    async def app(scope, receive, send) -> None:
        logging.getLogger("src.test").warning("inside the request")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lines = log_lines("json")
    transport = httpx.ASGITransport(app=Edge(app, Drain(), limit=10, max_body_bytes=100))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/", headers={"X-Request-ID": "during-1"})
    logging.getLogger("src.other").info("after the request")
    records = by_logger(lines())
    assert records["src.test"]["request_id"] == "during-1"
    assert records["src.access"]["request_id"] == "during-1"
    assert records["src.access"]["status"] == 204
    assert records["src.other"]["request_id"] == "-"


async def test_no_access_line_above_info(client, log_lines):
    """LOG_LEVEL=WARNING turns the access lines off (what the bench's "off" measures)."""
    configure_logging(Settings(_env_file=None, log_format="json", log_level="WARNING"))
    response = await client.get("/country/GB")
    assert response.status_code == 200
    lines = log_lines("json")  # back at INFO: the next request is logged again
    await client.get("/country/GB")
    assert len([line for line in lines() if '"src.access"' in line]) == 1


def test_json_lines_parse_and_carry_the_fields(log_lines):
    lines = log_lines("json")
    logging.getLogger("src.access").info(
        "GET /x 200", extra={"route": "/x", "status": 200, "duration_ms": 1.5}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("src.test").exception("it failed")
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[1mStarted"})
    records = by_logger(lines())
    record = records["src.access"]
    assert record["message"] == "GET /x 200"
    assert (record["route"], record["status"], record["request_id"]) == ("/x", 200, "-")
    assert records["src.test"]["level"] == "error"
    assert "ValueError: boom" in records["src.test"]["exception"]
    assert "color_message" not in records["uvicorn.error"]


async def test_text_lines_are_readable_and_carry_the_id(client, log_lines):
    """LOG_FORMAT=text (for dev): one readable line per request, with its fields."""
    lines = log_lines("text")
    await client.get("/country/GB", headers={"X-Request-ID": "text-1"})
    (line,) = [line for line in lines() if "[src.access]" in line]
    assert "GET /country/GB 200" in line
    assert "request_id=text-1" in line and "route=/country/{code}" in line
    assert not line.lstrip().startswith("{")


async def test_text_lines_escape_control_characters(client, log_lines):
    """One access line per request whatever its path; ESC, CR and the rest escaped in the
    access line and in every other record's message and fields (before: a forged line)."""
    lines = log_lines("text")
    await client.get(FORGED_PATH)
    logging.getLogger("src.test").warning(
        "saw %s", "a\nb\x1b\x85\u202e", extra={"agent": "x\ry\u2029"}
    )
    (access, other) = [line for line in lines() if "[httpx]" not in line]
    assert "[src.access]" in access and "FORGED" in access
    assert "/nowhere\\n2026-01-01T00:00:00.000000Z [info     ] POST" in access
    assert "FORGED\\r\\x1b[31m\\u2028 " in access
    assert "saw a\\nb\\x1b\\x85\\u202e" in other and "agent=x\\ry\\u2029" in other


async def test_json_lines_escape_what_json_allows_raw(client, log_lines):
    """orjson escapes C0 only: C1, DEL, U+2028/9 and bidi controls are escaped too."""
    lines = log_lines("json")
    await client.get(FORGED_PATH + "%7F%C2%85%E2%80%AE")
    (access,) = [line for line in lines() if '"httpx"' not in line]
    assert access.isascii()
    record = json.loads(access)
    assert record["message"].endswith("FORGED\r\x1b[31m\u2028\x7f\x85\u202e 404")


@pytest.mark.slow  # a server process
def test_a_served_forged_path_is_one_escaped_line(migrated, database_url, tmp_path: Path):
    """`python -m src.serve` with LOG_FORMAT=text, a raw request whose path has %0A, %0D
    and %1B: exactly one access line for it, those written as \\n, \\r, \\x1b."""
    port = free_port()
    env = child_env(database_url, API_HOST="127.0.0.1", API_PORT=str(port), LOG_FORMAT="text")
    log = tmp_path / "stderr.log"
    with logging_server(["-m", "src.serve"], env, port, log):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"GET {FORGED_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 ")
        eventually(lambda: b"FORGED" in log.read_bytes(), "the access line")
    text = log.read_bytes().decode()
    assert "\x1b" not in text and "\r" not in text
    (line,) = [line for line in text.splitlines() if "FORGED" in line]
    assert "[src.access]" in line
    assert "/nowhere\\n2026-01-01T00:00:00.000000Z [info     ] POST /country 201" in line
    assert "FORGED\\r\\x1b[31m\\u2028 404" in line


@pytest.mark.slow  # a server process
def test_plain_uvicorn_writes_one_access_line_per_request(migrated, database_url, tmp_path: Path):
    """`uvicorn src.main:app` (the module's own docstring, the bench): the app's access line
    only; uvicorn's, re-enabled by the logging setup, doubled every line's cost."""
    port = free_port()
    env = child_env(database_url, LOG_FORMAT="json", LOG_LEVEL="INFO")
    log = tmp_path / "stderr.log"
    with logging_server(["-m", "uvicorn", "src.main:app", "--port", str(port)], env, port, log):
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/country/GB").status_code == 200
        eventually(lambda: log.read_bytes().count(b"/country/GB") >= 3, "the access lines")
    lines = [json.loads(line) for line in log.read_text().splitlines() if "/country/GB" in line]
    assert [line["logger"] for line in lines] == ["src.access"] * 3


async def test_concurrent_requests_give_one_access_line_each(client, log_lines):
    """Lines batched per turn of the event loop: N requests at once, N lines, each once."""
    lines = log_lines("json")
    ids = [f"burst-{n}" for n in range(40)]
    responses = await asyncio.gather(
        *(client.get("/country/GB", headers={"X-Request-ID": rid}) for rid in ids)
    )
    assert {response.status_code for response in responses} == {200}
    access = [json.loads(line) for line in lines() if '"src.access"' in line]
    assert sorted(record["request_id"] for record in access) == sorted(ids)
    assert lines() == []  # nothing left waiting, nothing written twice


ACCESS_SCOPE = {"method": "GET", "path": "/batched", "client": ("127.0.0.1", 5000)}


async def test_an_access_line_is_written_at_the_end_of_its_turn(log_lines, capsys):
    """Not at once: at the end of the event loop's turn, one write for the turn's lines."""
    log_lines("json")
    log_access(ACCESS_SCOPE, 200, time.perf_counter_ns(), "turn-1")
    log_access(ACCESS_SCOPE, 201, time.perf_counter_ns(), "turn-2")
    assert capsys.readouterr().err == ""
    await asyncio.sleep(0)
    written = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["request_id"], r["status"]) for r in written] == [("turn-1", 200), ("turn-2", 201)]


async def test_other_records_come_after_the_access_lines_before_them(log_lines, capsys):
    """A record logged in the same turn as a waiting access line is written after it."""
    log_lines("json")
    log_access(ACCESS_SCOPE, 200, time.perf_counter_ns(), "first")
    logging.getLogger("src.test").warning("second")
    log_access(ACCESS_SCOPE, 200, time.perf_counter_ns(), "third")
    await asyncio.sleep(0)
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [
        r.get("request_id") if r["logger"] == "src.access" else r["message"] for r in records
    ] == [
        "first",
        "second",
        "third",
    ]


@pytest.mark.parametrize(
    ("method", "path", "client", "route"),
    [
        ("GET", "/country/GB", ("127.0.0.1", 5000), "/country/{code}"),
        ("GET", '/a"b\\c', ("::1", 1), None),
        ("GET", "/caf\u00e9/\u2028/\x7f/\x01/\u202e", None, "/{rest}"),
        ('M"X', "/x", ('1.2.3.4"\n{"forged":1}', 2), 'odd"route\\'),
    ],
)
async def test_json_access_lines_are_what_json_would_write(method, path, client, route, log_lines):
    """Values written as they are when JSON allows it, escaped otherwise: every line parses
    back to its values and is one line, no character that could forge one written raw."""
    lines = log_lines("json")
    scope = {"method": method, "path": path, "client": client}
    if route is not None:
        scope["route"] = SimpleNamespace(path=route)
    log_access(scope, 404, time.perf_counter_ns(), "json-1")
    (line,) = lines()
    record = json.loads(line)
    assert not UNSAFE.search(line)
    assert record.pop("timestamp").endswith("Z") and record.pop("duration_ms") >= 0
    assert record == {
        "logger": "src.access",
        "level": "info",
        "method": method,
        "route": route,
        "status": 404,
        "client": f"{client[0]}:{client[1]}" if client else None,
        "request_id": "json-1",
        "message": f"{method} {path} 404",
    }


async def test_text_access_lines_escape_the_client(log_lines):
    """The client may come from X-Forwarded-For (`uvicorn src.main:app` trusts it from
    localhost), whose value may hold NEL (0x85) and CSI (0x9b): escaped like every other
    field (before: written raw, NEL started a forged line)."""
    lines = log_lines("text")
    scope = {**ACCESS_SCOPE, "client": ("10.0.0.1\x852026-01-01 [info     ] forged\x9b31m", 0)}
    log_access(scope, 200, time.perf_counter_ns(), "text-client")
    (line,) = lines()
    assert "client=10.0.0.1\\x852026-01-01 [info     ] forged\\x9b31m:0 " in line


# A child that logs one access line and exits at once. `loop` runs it under asyncio.run
# (whose shutdown turns still run the pending flush); `stopped` stops the loop in the very
# turn that wrote it, so that only the exit hook can write it; `unhooked` is `stopped`
# without that hook: the control, which must lose the line (else `stopped` proves nothing).
EXIT_CHILD = """
import asyncio, atexit, sys, time
import src.logs
from src.config import Settings
from src.logs import configure_logging, flush_access, log_access

configure_logging(Settings(_env_file=None, log_format="json", log_level="INFO"))
scope = {"method": "GET", "path": "/at-exit", "client": None}
how = sys.argv[1]
if how == "unhooked":
    atexit.unregister(flush_access)


def write():
    log_access(scope, 200, time.perf_counter_ns(), "exit-" + how)


async def main():
    write()


if how == "loop":
    asyncio.run(main())
else:
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (write(), loop.stop()))
    loop.run_forever()
    loop.close()
    assert src.logs._access._pending, "written before the exit: the check proves nothing"
"""


@pytest.mark.slow  # a Python process
@pytest.mark.parametrize(
    ("how", "written"), [("loop", True), ("stopped", True), ("unhooked", False)]
)
def test_a_process_exiting_right_after_an_access_line_still_writes_it(how: str, written: bool):
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD, how],
        cwd=PROJECT_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if "/at-exit" in line]
    expected = [(f"exit-{how}", "GET /at-exit 200")] if written else []
    assert [(line["request_id"], line["message"]) for line in lines] == expected, proc.stderr


def test_a_flush_lost_with_its_loop_does_not_hold_back_later_lines(log_lines, capsys):
    """A loop stopped in the turn that wrote a line never runs that turn's flush: the next
    loop's lines are still written at the end of their turn (the first version waited for
    another record or the process's exit, having scheduled only when the batch was empty)."""
    log_lines("json")
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (log_access(ACCESS_SCOPE, 200, 0, "lost-turn"), loop.stop()))
    loop.run_forever()
    loop.close()

    async def next_loop() -> None:
        log_access(ACCESS_SCOPE, 200, time.perf_counter_ns(), "next-loop")
        await asyncio.sleep(0)

    try:
        asyncio.run(next_loop())
        assert "next-loop" in capsys.readouterr().err
    finally:
        flush_access()  # what is held back: while the captured stderr is open

"""The rolling rehearsal's Service emulation: requests go only to backends whose probes
passed, a change reaches the routing after the endpoint lag, and no backend is a 503."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from alembic_pg_guard._rehearse.router import Router
from alembic_pg_guard._rehearse.timings import Timings

FAST = Timings(probe_period=0.05, probe_timeout=1, endpoint_lag=0.2)


class Backend:
    """A tiny HTTP server: /ready answers 200 or 503 as `ready` says, anything else its name."""

    def __init__(self, name: str) -> None:
        self.name, self.ready = name, True
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 64 * 1024  # head and body in one write: no delayed-ACK wait
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                if self.path == "/ready":
                    status, body = (200 if backend.ready else 503), b"{}"
                else:
                    status, body = 200, backend.name.encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                self.send_response(201)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        serve = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        serve.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def backends(*names: str) -> Iterator[dict[str, Backend]]:
    made = {name: Backend(name) for name in names}
    try:
        yield made
    finally:
        for backend in made.values():
            backend.close()


def until(check: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def answers(router: Router, n: int = 20) -> list[str]:
    with httpx.Client(base_url=router.url) as client:
        return [client.get("/who").text for _ in range(n)]


def test_routes_only_to_ready_backends_after_the_lag() -> None:
    with backends("a", "b") as made, Router("/ready", FAST) as router:
        made["b"].ready = False
        router.add("a", made["a"].url)
        router.add("b", made["b"].url)
        until(lambda: router.ready("a"))
        assert not router.routed("a")  # passed, but the lag has not run yet
        until(lambda: router.routed("a"))
        assert set(answers(router)) == {"a"}
        made["b"].ready = True
        until(lambda: router.routed("b"))
        assert set(answers(router)) == {"a", "b"}  # both, in turn
        made["a"].ready = False
        until(lambda: not router.routed("a"))
        assert set(answers(router)) == {"b"}
        assert router.requests_to("a") + router.requests_to("b") == 60


def test_deletion_leaves_the_routing_after_the_lag_though_ready() -> None:
    with backends("old", "new") as made, Router("/ready", FAST) as router:
        router.add("old", made["old"].url)
        router.add("new", made["new"].url)
        until(lambda: router.routed("old") and router.routed("new"))
        deleted = time.monotonic()
        router.remove("old")
        until(lambda: not router.routed("old"))
        assert time.monotonic() - deleted >= FAST.endpoint_lag
        assert router.ready("old")
        assert set(answers(router)) == {"new"}
        with httpx.Client(base_url=router.url) as client:
            sent = client.post("/echo?x=1", content=b"a body")
        assert (sent.status_code, sent.content) == (201, b"a body")


def test_no_ready_backend_is_a_503_and_counts_as_empty_time() -> None:
    with backends("a") as made, Router("/ready", FAST) as router:
        start = time.monotonic()
        with httpx.Client(base_url=router.url) as client:
            assert client.get("/who").status_code == 503
        router.add("a", made["a"].url)
        until(lambda: router.routed("a"))
        routed_at = time.monotonic()
        time.sleep(0.2)
        made["a"].ready = False
        until(lambda: not router.routed("a"))
        end = time.monotonic() + 0.3
        time.sleep(0.3)
        empty = router.empty_seconds(start, end)
        assert routed_at - start - 0.05 <= empty <= end - start - 0.2, empty
        assert router.no_backend == 1


def test_one_failed_probe_takes_a_backend_out_only_at_its_threshold() -> None:
    patient = Timings(probe_period=0.05, probe_timeout=1, endpoint_lag=0.05, failure_threshold=4)
    with backends("a") as made, Router("/ready", patient) as router:
        router.add("a", made["a"].url)
        until(lambda: router.routed("a"))
        made["a"].ready = False
        time.sleep(0.1)  # two or three failed probes: still ready
        assert router.ready("a")
        until(lambda: not router.ready("a"))


def test_a_backend_joins_only_after_its_success_threshold() -> None:
    wary = Timings(probe_period=0.1, probe_timeout=1, endpoint_lag=0.05, success_threshold=3)
    with backends("a") as made, Router("/ready", wary) as router:
        made["a"].ready = False
        router.add("a", made["a"].url)
        time.sleep(0.15)
        made["a"].ready = True
        passed = time.monotonic()
        until(lambda: router.ready("a"))
        assert time.monotonic() - passed >= 2 * wary.probe_period - 0.05  # the 3rd pass

"""pytest plugin loaded into the base ref's test run by `compat` (_compat.py).

For each failing test it writes one JSON line to $COMPAT_REPORT: the test, the last HTTP
request it sent (through httpx) and its status, and the error. It is copied to a temp
folder and loaded as `-p compat_probe`, so it never clashes with the base's own modules.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

_last: dict[str, Any] = {}
_async_send = httpx.AsyncClient.send
_sync_send = httpx.Client.send


def _target(request: httpx.Request) -> str:
    return f"{request.method} {request.url.raw_path.decode()}"


async def _recording_async_send(self: httpx.AsyncClient, request: httpx.Request, *a, **k):
    _last.clear()
    _last["request"] = _target(request)
    response = await _async_send(self, request, *a, **k)
    _last["status"] = response.status_code
    return response


def _recording_sync_send(self: httpx.Client, request: httpx.Request, *a, **k):
    _last.clear()
    _last["request"] = _target(request)
    response = _sync_send(self, request, *a, **k)
    _last["status"] = response.status_code
    return response


httpx.AsyncClient.send = _recording_async_send  # type: ignore[method-assign]
httpx.Client.send = _recording_sync_send  # type: ignore[method-assign]


def pytest_runtest_setup(item: pytest.Item) -> None:
    _last.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when != "call":
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    line = {
        "test": report.nodeid,
        "request": _last.get("request"),
        "status": _last.get("status"),
        "error": " ".join(message.split())[:400],
    }
    with open(os.environ["COMPAT_REPORT"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")

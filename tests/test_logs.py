"""src/logs.py: a request ID on every answer and in every log line of that request."""

import json
import logging

import pytest

from src.config import Settings
from src.logs import RequestIdFilter, configure_logging


async def test_a_valid_request_id_is_echoed_and_in_the_access_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="src.access"):
        response = await client.get("/country/GB", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"
    (line,) = [r for r in caplog.records if r.name == "src.access"]
    assert (line.method, line.route, line.status) == ("GET", "/country/{code}", 200)
    assert line.duration_ms >= 0 and line.client


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
async def test_errors_carry_the_request_id_too(client, method, path, status):
    response = await client.request(method, path, headers={"X-Request-ID": "err-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "err-1"


async def test_log_lines_made_during_a_request_carry_its_id(client, caplog):
    """The filter reads the ID of the request running now; outside one it is "-"."""
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        await client.get("/country/GB", headers={"X-Request-ID": "during-1"})
        logging.getLogger("src.test").info("after the request")
    by_name = {r.name: r for r in caplog.records}
    assert by_name["src.access"].request_id == "during-1"
    assert by_name["src.test"].request_id == "-"


def test_json_lines_parse_and_carry_the_fields(capsys):
    settings = Settings(_env_file=None, log_format="json")
    configure_logging(settings)
    try:
        logging.getLogger("src.access").info(
            "GET /x 200", extra={"route": "/x", "status": 200, "duration_ms": 1.5}
        )
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["message"] == "GET /x 200"
        assert (record["route"], record["status"], record["request_id"]) == ("/x", 200, "-")
    finally:
        logging.getLogger().handlers.clear()

"""The bench's own logic: the write cycle's codes and load, and the goal rows' verdicts."""

import shutil

import pytest

from bench.run import (
    GOALS,
    LOG_ENV,
    WRITES_SCRIPT,
    Load,
    Server,
    Workload,
    hit_table,
    logging_table,
    summarise,
    table,
    writes_table,
)
from bench.write_load import WriteCycle, free_codes, query_free_codes
from devtools.embedded_pg import env_for_url
from tests.helpers import API_KEY


def result(rps: float, p99_ms: float = 5.0, non_2xx: int = 0, cycles: bool = False) -> dict:
    got = {"rps": rps, "p50_ms": 1.0, "p99_ms": p99_ms, "non_2xx": non_2xx, "socket_errors": 0}
    return {**got, "cycles_per_s": rps / 3, "unattributed": 0} if cycles else got


def test_free_codes_are_no_countrys_nor_their_alpha3():
    codes = free_codes({"GB", "XA"}, {"XBX", "GBR"})
    assert "GB" not in codes and "XA" not in codes and "XB" not in codes
    assert "XC" in codes and len(codes) == 26 * 26 - 3


def test_the_cycle_needs_a_code_per_connection():
    cycle = WriteCycle("postgresql://unused", API_KEY, free_codes(set(), set())[:100])
    assert cycle.fits(64, 2) and cycle.fits(98, 2)
    assert not cycle.fits(100, 2) and not cycle.fits(99, 2)


def test_goal_rows_say_what_they_missed():
    raw = {
        (1, "get", "app"): [result(600, p99_ms=25.0)],
        (1, "get", "ceiling"): [result(1000)],
        (1, "get", "floor"): [result(800)],
        (1, "search", "app"): [result(500)],
        (1, "search", "ceiling"): [result(1000)],
        (1, "search", "app-nolog"): [result(520)],
        (1, "writes", "app"): [result(450, non_2xx=2, cycles=True)],
        (1, "writes", "ceiling"): [result(900, cycles=True)],
    }
    rows = {row["workload"]: row for row in summarise(raw)}
    assert rows["get"]["goal"] == GOALS["get"].ratio
    assert not rows["get"]["goal_met"]
    assert rows["search"]["goal_met"] and rows["search"]["floor"] is None
    assert not rows["writes"]["goal_met"]
    printed = table(list(rows.values()))
    assert "missed: p99 > 20 ms" in printed and "| - | - |" in printed
    assert "POST" not in printed  # the writes have their own table
    writes = writes_table(list(rows.values()))
    assert "**0.50x**" in writes and "missed: errors" in writes
    assert "GET /country?q=" in logging_table(raw)[0]  # only where app-nolog ran too


@pytest.mark.parametrize(
    ("cached", "nolog", "p99_ms", "verdict"),
    [
        (600, 640, 8.0, "met"),
        (400, 640, 8.0, "missed: < 0.5x raw, access line on / off < 0.90"),
        (600, 620, 12.0, "missed: p99 > 10 ms"),
    ],
)
def test_the_hit_path_against_the_raw_web_limit(cached, nolog, p99_ms, verdict):
    raw = {
        (1, "get", "raw"): [result(1000)],
        (1, "get", "cached"): [result(cached, p99_ms=p99_ms)],
        (1, "get", "cached-nolog"): [result(nolog)],
    }
    text, rows = hit_table(raw)
    assert rows[0]["verdict"] == verdict
    assert f"**{cached / 1000:.2f}x**" in text


@pytest.mark.slow  # serves with uvicorn and loads with wrk
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.parametrize("target", ["ceiling", "app"])
def test_the_write_load_cycles_without_a_refusal(target, database_url, db, tmp_path):
    """bench/writes.lua on the app and the write ceiling: every POST, PATCH (If-Match) and
    DELETE answered 2xx, so no two cycles shared a code; no row left after clean()."""
    cycle = WriteCycle(database_url, API_KEY, query_free_codes(database_url))
    env = {**env_for_url(database_url), **LOG_ENV, "ENVIRONMENT": "test", "API_KEY": API_KEY}
    env["CACHE_ENABLED"] = "false"
    with Server(target, 1, env, tmp_path / "server.log") as server:
        cycle.check(server.url, {}, target)
        load = Workload(cycle.wrk_args(2), WRITES_SCRIPT, cycle)
        got = load.run(Load(shutil.which("wrk"), 2, 16), server.url, 2)
    assert got["cycles_per_s"] > 0
    assert (got["non_2xx"], got["socket_errors"], got["unattributed"]) == (0, 0, 0)
    assert len(query_free_codes(database_url)) == len(cycle.codes)

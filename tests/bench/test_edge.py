"""bench.edge's verdict and table: what wrk leaves out (requests unanswered when it stops,
answers past its --timeout) counts against the goal, not only the 503s it timed."""

from bench.edge import CAP_OFF, goal_check, report, spread


def a_run(**changes: object) -> dict:
    run = {
        "code": "this checkout",
        "max_connections": 256,
        "load_average_1m": 0.5,
        "rps": 9000,
        "errors": {"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0},
        "by_status": {"200": spread([40_000, 90_000]), "503": spread([5_000, 60_000])},
        "unanswered_at_end": spread([50_000]),
        "reconnect": spread([100, 2_000]),
        **changes,
    }
    return {**run, "goals_met": goal_check(run)}


def test_the_goal_counts_what_wrk_leaves_out():
    assert a_run()["goals_met"] == {"answered_p99": True, "refused_max": True}
    stuck = a_run(unanswered_at_end=spread([10_400_000]))  # waited the whole run
    assert stuck["goals_met"]["refused_max"] is False
    late = a_run(errors={"connect_errors": 0, "timeouts": 3})  # answered after --timeout
    assert late["goals_met"]["refused_max"] is False
    slow = a_run(by_status={"200": spread([1_500_000]), "503": spread([5_000])})
    assert slow["goals_met"] == {"answered_p99": False, "refused_max": True}


def test_the_table_has_a_row_per_run():
    table = report({"runs": [a_run(), a_run(max_connections=CAP_OFF, by_status={})]})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| this checkout | 256 | 0.50 | 9,000 | 2 | 90 ms |")
    assert "| off |" in lines[3] and lines[3].split(" | ").count("-") == 6

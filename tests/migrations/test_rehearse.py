"""`pipenv run rehearse`: the current history passes; unsafe revisions fail, named.

Each run starts its own throwaway cluster, app and load generator. The verdicts asserted
here come from what the revisions did (whole-table work under a lock that blocks
clients, table rewrites), not from how long it took on a machine busy with other test
suites: the client-stall budget is raised to 10 s for that reason. The whole history,
from the baseline, runs on 400,000 rows: at 100,000 the planner runs 726cc7c321d4's
batched backfill with sequential scans, which the rehearsal rightly flags; from 250,000
on it uses the index (docs/rehearse.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import PROJECT_ROOT, Settings
from tests.helpers import (
    child_env,
    copy_project,
    one_line_failure,
    revisions_in_order,
    script_directory,
    write_revision,
)

FLAGS = ("--rate", "40", "--warmup", "3", "--gap", "1", "--max-stall", "10")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Each one blocks the big table's clients for as long as it works on every row.
UNSAFE = {
    "a1_plain_index": (
        'def upgrade():\n    op.create_index("subdivision_name_idx", "subdivision", ["name"])\n',
        "ShareLock on subdivision",
    ),
    "a2_type_rewrite": (
        "def upgrade():\n"
        '    op.alter_column("subdivision", "country_id", type_=sa.BigInteger(),'
        " existing_type=sa.Integer())\n",
        "rewrote subdivision",
    ),
    "a3_inline_check": (
        "def upgrade():\n"
        '    op.create_check_constraint("subdivision_name_check", "subdivision",'
        ' "length(name) > 0")\n',
        "AccessExclusiveLock on subdivision",
    ),
    "a4_locked_backfill": (
        "def upgrade():\n"
        '    op.add_column("subdivision", sa.Column("note", sa.Text()))\n'
        '    op.execute("UPDATE subdivision SET note = name")\n',
        "row locks on every row it wrote",
    ),
    # No counters or locks survive an autocommit_block: known from the SQL alone.
    "a5_plain_index_in_autocommit": (
        "def upgrade():\n"
        "    with op.get_context().autocommit_block():\n"
        '        op.create_index("subdivision_code_name_idx", "subdivision", ["code", "name"])\n',
        "ShareLock on subdivision",
    ),
    # Batches in one transaction: every row stays locked until COMMIT (here held by the
    # rest of the revision past the test's 10 s stall budget).
    "a6_batched_in_one_transaction": (
        "def upgrade():\n"
        "    for start in range(0, 50_000, 5_000):\n"
        '        op.execute(f"UPDATE subdivision SET note = code WHERE id > {start} "\n'
        '                   f"AND id <= {start + 5_000}")\n'
        '    op.execute("SELECT pg_sleep(10.5)")\n',
        "until the revision's COMMIT",
    ),
    # Its own long lock timeout: the app's queries queue behind its wait for the reader.
    "a7_long_lock_attempt": (
        "def upgrade():\n"
        "    op.execute(\"SET LOCAL lock_timeout = '6s'\")\n"
        '    op.add_column("subdivision", sa.Column("late", sa.Text()))\n',
        "behind the migration's",
    ),
}
# The lock settings' code defaults, whatever a local .env says.
LOCK_DEFAULTS = {
    name.upper(): str(Settings.model_fields[name].default)
    for name in (
        "migration_lock_timeout_ms",
        "migration_lock_retries",
        "migration_lock_retry_delay_seconds",
        "migration_lock_retry_total_seconds",
    )
}


def rehearse(cwd: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic_pg_guard", "rehearse", *FLAGS, "--out", str(out), *args],
        cwd=cwd,
        env=child_env(**LOCK_DEFAULTS),
        capture_output=True,
        text=True,
        timeout=540,
    )


def test_whole_history_passes_from_the_baseline(tmp_path: Path) -> None:
    """Every revision from the first one: the 3-step NOT NULL (its backfill finds the
    seeded ISO codes), the ISO load, NOT VALID + VALIDATE, CONCURRENTLY."""
    ordered = [r.revision for r in revisions_in_order(script_directory())]
    proc = rehearse(PROJECT_ROOT, tmp_path, "--from", ordered[0], "--rows", "400000")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stopped_at"] is None
    revisions = {r["revision"].split()[0]: r for r in report["revisions"]}
    assert list(revisions) == ordered[1:]
    assert all(r["verdict"] == "pass" for r in revisions.values()), report["revisions"]
    # Each revision ran with a long reader open; nobody waited a second behind its locks.
    assert all(r["long_reader_s"] >= 2 for r in revisions.values()), report["revisions"]
    assert all(r["max_lock_wait_ms"] <= 1000 for r in revisions.values()), report["revisions"]
    assert all(r["wal_bytes"] > 0 for r in revisions.values()), report["revisions"]
    # Head's app reads country.source (added by aab8f9bb2bdb): after it the whole mix is
    # served; before, only the kinds that need no newer column (docs/rehearse.md).
    served = ordered[ordered.index("aab8f9bb2bdb") + 1 :]
    assert all(revisions[r]["requests"] > 0 for r in served), report["revisions"]
    assert all("get" in revisions[r]["kinds_measured"] for r in served), report["revisions"]
    assert "subdivisions" in revisions[ordered[-1]]["kinds_measured"]
    assert report["requests"] > 100
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def test_unsafe_revisions_fail_each_named(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    versions = project / "alembic" / "versions"
    head = script_directory().get_current_head()
    down = head
    for revision, (body, _) in UNSAFE.items():
        write_revision(versions, revision, down, body)
        down = revision
    out = tmp_path / "out"
    proc = rehearse(project, out, "--from", head, "--rows", "100000")
    line = one_line_failure(proc)
    report = {
        r["revision"].split()[0]: r
        for r in json.loads((out / "report.json").read_text())["revisions"]
    }
    for revision, (_, what) in UNSAFE.items():
        assert f"revision {revision} " in line, line
        verdict = report[revision]
        assert verdict["verdict"] == "over budget", verdict
        assert any(what in reason for reason in verdict["reasons"]), verdict["reasons"]
    assert report["a2_type_rewrite"]["rewrote"] == ["subdivision"]
    batched = report["a6_batched_in_one_transaction"]
    assert batched["row_locks"]["rows_held_past_budget"] >= 45_000, batched["row_locks"]
    assert batched["dead_tuples"] >= 45_000 and batched["wal_bytes"] > 1_000_000, batched
    assert report["a7_long_lock_attempt"]["max_lock_wait_ms"] > 1000
    assert "fix" in report["a5_plain_index_in_autocommit"]["whole_table_work"][0]
    assert all(report[r]["rewrote"] == [] for r in UNSAFE if r != "a2_type_rewrite")


def test_unknown_start_is_one_line(tmp_path: Path) -> None:
    proc = rehearse(PROJECT_ROOT, tmp_path, "--from", "nope", "--rows", "10")
    assert "--from nope" in one_line_failure(proc)

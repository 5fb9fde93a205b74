"""The migration gates (devtools.migration_checks): each one passes on a good history and is
shown failing on a bad one, built in a scratch copy of the project."""

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from devtools import migration_checks
from src.config import PROJECT_ROOT, Settings
from src.migrate import alembic_config
from tests.helpers import (
    add_to_country_model,
    child_env,
    copy_project,
    fresh_database,
    run_python,
    unreachable_url,
    url_string,
    write_revision,
)

CLEAN_BASE = """def upgrade() -> None:
    op.create_table(
        "gadget",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gadget")
"""

# Two classic ways to lock a busy table: a NOT NULL column without a default (rewrites
# or fails on existing rows) and an index built without CONCURRENTLY (blocks writes).
RISKY = """def upgrade() -> None:
    op.add_column("gadget", sa.Column("weight", sa.BigInteger(), nullable=False))
    op.create_index("gadget_name_idx", "gadget", ["name"])


def downgrade() -> None:
    op.drop_index("gadget_name_idx", table_name="gadget")
    op.drop_column("gadget", "weight")
"""
RISKY_RULES = {"adding-required-field", "require-concurrent-index-creation"}
LOG_LINE = re.compile(r"^(INFO|WARNI?N?G?|DEBUG) +\[")


def gates(project: Path, *args: str, **env: str):
    """The gates as CI runs them, in `project`. The configured database is one nothing
    listens on: no gate may touch a real one unless a test points it there."""
    return run_python(
        "-m",
        "devtools.migration_checks",
        *args,
        cwd=project,
        env=child_env(unreachable_url(), **env),
    )


def gate_failure(proc) -> list[str]:
    """The gate failed the documented way: exit 1, one line per problem, no traceback.
    Returns those lines (alembic's own log lines, also on stderr, left out)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert lines[-1].startswith("error: migration checks failed: ")
    return lines


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def only_revisions(project: Path, *revisions: tuple[str, str | None, str]) -> Path:
    """Replace the copy's history with the given (revision, down_revision, body)."""
    versions = project / "alembic" / "versions"
    shutil.rmtree(versions)
    versions.mkdir()
    for revision, down, body in revisions:
        write_revision(versions, revision, down, body)
    return versions


def scratch_config(project: Path, settings: Settings) -> Config:
    cfg = alembic_config(settings)
    cfg.set_main_option("script_location", str(project / "alembic"))
    return cfg


# --- heads -----------------------------------------------------------------------------


def test_heads_gate_passes_on_the_project(capsys):
    assert migration_checks.check_heads(alembic_config()) == []
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert capsys.readouterr().out == f"heads: ok ({head})\n"


def test_heads_gate_fails_on_two_heads(project: Path):
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    versions = project / "alembic" / "versions"
    write_revision(versions, "aaaa00000001", head, CLEAN_BASE)
    write_revision(versions, "bbbb00000002", head, CLEAN_BASE)

    lines = gate_failure(gates(project, "heads"))
    assert lines[0].startswith("heads: 2 heads (aaaa00000001, bbbb00000002): ")
    assert "alembic merge heads" in lines[0]

    lines = gate_failure(gates(project, "all"))  # drift cannot run on two heads
    assert "drift: skipped until the history has a single head" in lines


# --- drift -----------------------------------------------------------------------------


def test_drift_gate_passes_on_the_project(sync_engine: Engine):
    """--configured-db: TEST_DATABASE_URL (here a fresh database, while the configured one
    is unreachable), upgraded by src.migrate."""
    with fresh_database(sync_engine) as url:
        proc = gates(PROJECT_ROOT, "drift", "--configured-db", TEST_DATABASE_URL=url_string(url))
    assert proc.returncode == 0, proc.stderr
    assert "drift: database upgraded from empty to " in proc.stdout
    assert "drift: ok (the models match the migrations)" in proc.stdout


def test_drift_gate_fails_when_a_model_changes_without_a_revision(project: Path):
    """The default mode: a throwaway embedded PostgreSQL, migrated to head, then compared."""
    add_to_country_model(
        project / "src" / "models.py",
        "    drifted: Mapped[str | None] = mapped_column(String(10))",
    )
    lines = gate_failure(gates(project, "drift"))
    assert lines[0] == (
        "drift: the models differ from the migrations: add_column country.drifted; "
        f"{migration_checks.REVISION_HINT}"
    )
    assert len(lines) == 2


def test_describe_diff_names_what_changed():
    from sqlalchemy import Column, Index, MetaData, String, Table

    table = Table("t", MetaData(), Column("c", String(5)))
    assert migration_checks.describe_diff(("add_table", table)) == "add_table t"
    assert migration_checks.describe_diff(("remove_column", None, "t", table.c.c)) == (
        "remove_column t.c"
    )
    index = Index("t_c_idx", table.c.c)
    assert migration_checks.describe_diff(("add_index", index)) == "add_index t_c_idx on t"
    modify = [("modify_nullable", None, "t", "c", {}, True, False)]
    assert migration_checks.describe_diff(modify) == "modify_nullable t.c: True -> False"


# --- squawk ----------------------------------------------------------------------------


def test_offline_sql_per_revision_carries_the_timeouts_and_not_alembics_table(
    settings: Settings,
):
    cfg = alembic_config(settings)
    script = ScriptDirectory.from_config(cfg)
    first = next(rev for rev in script.walk_revisions() if rev.down_revision is None)
    sql = migration_checks.offline_sql(cfg, first)
    assert sql.startswith("SET lock_timeout = ")
    assert "SET statement_timeout = " in sql
    assert "CREATE TABLE alembic_version" not in sql
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{first.revision}')" in sql


def test_squawk_gate_reports_every_revision_of_the_project():
    proc = gates(PROJECT_ROOT, "squawk")
    assert proc.returncode in (0, 1), proc.stderr
    reported = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("squawk:")]
    script = ScriptDirectory.from_config(alembic_config())
    assert reported == [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_squawk_gate_passes_a_clean_history(project: Path):
    only_revisions(project, ("aaaa00000001", None, CLEAN_BASE))
    proc = gates(project, "squawk")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "squawk: aaaa00000001 test-only revision aaaa00000001: ok\n"


def test_squawk_gate_fails_a_risky_revision(project: Path):
    only_revisions(
        project, ("aaaa00000001", None, CLEAN_BASE), ("bbbb00000002", "aaaa00000001", RISKY)
    )
    proc = gates(project, "squawk")
    lines = gate_failure(proc)
    assert "squawk: aaaa00000001 test-only revision aaaa00000001: ok" in proc.stdout
    assert "squawk: bbbb00000002 test-only revision bbbb00000002: 2 problem(s)" in proc.stdout
    found = {line.split(": ")[2] for line in lines if line.startswith("squawk: bbbb00000002 line")}
    assert found == RISKY_RULES
    assert any("ADD COLUMN weight BIGINT NOT NULL" in line for line in lines)
    assert any("squawk_allow = " in line for line in lines)  # says how to allow it


def test_squawk_allow_in_a_revision_allows_those_rules_there_only(project: Path):
    allow = (
        "squawk_allow = {\n"
        '    "adding-required-field": "gadget is empty when this runs",\n'
        '    "require-concurrent-index-creation": "gadget is empty when this runs",\n'
        "}\n\n\n"
    )
    only_revisions(
        project,
        ("aaaa00000001", None, CLEAN_BASE),
        ("bbbb00000002", "aaaa00000001", allow + RISKY),
        (
            "cccc00000003",
            "bbbb00000002",
            RISKY.replace("weight", "height").replace("_name_", "_n_"),
        ),
    )
    proc = gates(project, "squawk")
    lines = gate_failure(proc)
    assert (
        "squawk: bbbb00000002 test-only revision bbbb00000002: ok; "
        "allowed adding-required-field x1 (gadget is empty when this runs); "
        "allowed require-concurrent-index-creation x1 (gadget is empty when this runs)"
    ) in proc.stdout
    assert "squawk: cccc00000003 test-only revision cccc00000003: 2 problem(s)" in proc.stdout
    assert not any(line.startswith("squawk: bbbb00000002") for line in lines)

    (Path(project) / "alembic" / "versions" / "cccc00000003_test_only.py").unlink()
    assert gates(project, "squawk").returncode == 0


RISKY_ALLOWED = '"adding-required-field": "x", "require-concurrent-index-creation": "x"'


@pytest.mark.parametrize(
    "allow,problem",
    [
        (
            f'{{{RISKY_ALLOWED}, "prefer-text-field": "stale"}}',
            "allows 'prefer-text-field' but this revision does not break it",
        ),
        (f'{{{RISKY_ALLOWED}, "no-such-rule": "typo"}}', "invalid rule name no-such-rule"),
        ('{"adding-required-field": ""}', "must be a literal dict of rule name -> one-line"),
        ('["adding-required-field"]', "must be a literal dict of rule name -> one-line"),
    ],
    ids=["unused", "unknown-rule", "no-reason", "not-a-dict"],
)
def test_squawk_allow_must_be_accurate(
    project: Path, settings: Settings, capsys, allow: str, problem: str
):
    only_revisions(
        project,
        ("aaaa00000001", None, CLEAN_BASE),
        ("bbbb00000002", "aaaa00000001", f"squawk_allow = {allow}\n\n\n{RISKY}"),
    )
    problems = migration_checks.check_squawk(scratch_config(project, settings))
    ours = [line for line in problems if line.startswith("squawk: bbbb00000002")]
    assert len(ours) == 1 and problem in ours[0], problems
    assert "squawk: bbbb00000002 test-only revision bbbb00000002: 1 problem(s)" in (
        capsys.readouterr().out
    )


def test_squawk_allowances_are_read_without_importing_the_revision(tmp_path: Path):
    path = tmp_path / "rev.py"
    path.write_text(
        'raise SystemExit("imported!")\n'
        'squawk_allow: dict[str, str] = {"ban-drop-column": "the column was never read"}\n'
    )
    assert migration_checks.squawk_allowances(path) == {
        "ban-drop-column": "the column was never read"
    }
    path.write_text("def upgrade(): pass\n")
    assert migration_checks.squawk_allowances(path) == {}


# --- wiring ----------------------------------------------------------------------------


def test_gates_run_in_ci_hooks_and_pipfile_scripts():
    scripts = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["scripts"]
    assert scripts["check-migrations"] == "python -m devtools.migration_checks all"
    for gate in ("heads", "drift", "squawk"):
        assert scripts[f"check-{gate}"] == f"python -m devtools.migration_checks {gate}"

    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "pipenv run check-migrations" in ci
    assert ci.index("pipenv run check-migrations") < ci.index("pipenv run test\n")

    config = yaml.safe_load((PROJECT_ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    for gate in ("heads", "squawk", "drift"):
        hook = hooks[f"migration-{gate}"]
        assert hook["entry"] == f".venv/bin/python -m devtools.migration_checks {gate}"
        assert hook["pass_filenames"] is False
        files = re.compile(hook["files"])
        assert files.search("src/models.py")
        assert files.search("alembic/versions/2026-01-01_0000_abc_x.py")
        assert files.search("alembic/env.py")
        assert not files.search("src/routes/country.py")

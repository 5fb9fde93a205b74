"""The migration gates (alembic-pg-guard's `check`, as this project wires them): each one
passes on the project's history and is shown failing on a bad one, built in a scratch copy
of the project."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from alembic.script import ScriptDirectory
from alembic_pg_guard import run_gates
from sqlalchemy import Engine

from src.config import PROJECT_ROOT, Settings
from src.migrations import alembic_config
from tests.helpers import (
    add_to_country_model,
    child_env,
    copy_project,
    fresh_database,
    run_python,
    scratch_config,
    unreachable_url,
    url_string,
    write_revision,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

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
RISKY_RULES = {
    ("upgrade", "adding-required-field"),
    ("upgrade", "require-concurrent-index-creation"),
    ("downgrade", "require-concurrent-index-deletion"),
}
LOG_LINE = re.compile(r"^(INFO|WARNI?N?G?|DEBUG) +\[")
# squawk: <file>:<line>: <revision> <upgrade|downgrade>: <rule>: ...
FINDING = re.compile(
    r"^squawk: (?P<file>[^:]+):(?P<line>\d+): (?P<rev>\w+) (?P<dir>\w+): (?P<rule>[\w-]+): "
)


def gates(project: Path, *args: str, **env: str):
    """The gates as CI runs them, in `project`. The configured database is one nothing
    listens on: no gate may touch a real one unless a test points it there."""
    return run_python(
        "-m",
        "alembic_pg_guard",
        "check",
        *args,
        cwd=project,
        env=child_env(unreachable_url(), **env),
    )


def gate_failure(proc) -> list[str]:
    """The gate failed the documented way: exit 1, one line per problem, no traceback.
    Returns the problems: the only line, or all but the count that follows several
    (alembic's own log lines, also on stderr, left out)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    if len(lines) == 1:
        assert lines[0].startswith("error: "), lines
        return [lines[0].removeprefix("error: ")]
    assert lines[-1] == f"error: migration checks failed: {len(lines) - 1} problems", lines
    return lines[:-1]


def findings(lines: list[str]) -> set[tuple[str, str, str]]:
    """(revision, direction, rule) of each squawk finding line."""
    return {(m["rev"], m["dir"], m["rule"]) for line in lines if (m := FINDING.match(line))}


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


# --- heads -----------------------------------------------------------------------------


def test_heads_gate_passes_on_the_project(settings: Settings, capsys):
    assert run_gates("heads", alembic_config(settings)) == []
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert capsys.readouterr().out == f"heads: ok ({head})\n"


def test_heads_gate_fails_on_two_heads(project: Path):
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    versions = project / "alembic" / "versions"
    write_revision(versions, "aaaa00000001", head, CLEAN_BASE)
    write_revision(versions, "bbbb00000002", head, CLEAN_BASE)

    (line,) = gate_failure(gates(project, "heads"))
    assert line.startswith(
        "heads: 2 heads (aaaa00000001 in alembic/versions/aaaa00000001_test_only.py, "
        "bbbb00000002 in alembic/versions/bbbb00000002_test_only.py): "
    )
    assert "pipenv run alembic merge heads" in line

    proc = gates(project, "all")  # drift and stairway cannot run on two heads
    assert line in gate_failure(proc)
    assert "drift: skipped until the history has a single head" in proc.stdout
    assert "stairway: skipped until the history has a single head" in proc.stdout


def git(repo: Path, *args: str, env: dict[str, str], check: bool = True):
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=180
    )
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_clean_git_merge_that_makes_two_heads_is_caught_by_the_hooks(tmp_path: Path):
    """Two branches each add a revision on the same head: git merges them without a
    conflict. The hooks `pipenv run setup` installs stop the merge commit, shout after a
    merge made anyway (--no-verify), and stop the push before any test runs."""
    repo = copy_project(tmp_path / "repo")
    for name in (".pre-commit-config.yaml", "Pipfile"):
        shutil.copy2(PROJECT_ROOT / name, repo / name)
    (repo / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    (repo / ".gitignore").write_text(".venv\n__pycache__/\n")
    env = child_env(
        unreachable_url(),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
    )
    git(repo, "init", "-q", "-b", "main", env=env)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "--no-verify", "-m", "base", env=env)
    setup = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["scripts"]["setup"]
    (install,) = [line.strip() for line in setup.splitlines() if "pre-commit install" in line]
    installed = subprocess.run(
        ["bash", "-c", install], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    for branch, revision in (("a", "aaaa00000001"), ("b", "bbbb00000002")):
        git(repo, "checkout", "-q", "-b", branch, "main", env=env)
        write_revision(repo / "alembic" / "versions", revision, head, CLEAN_BASE)
        git(repo, "add", "-A", env=env)
        git(repo, "commit", "-q", "--no-verify", "-m", f"add {revision}", env=env)
    git(repo, "checkout", "-q", "a", env=env)
    two_heads = (
        "error: heads: 2 heads (aaaa00000001 in alembic/versions/aaaa00000001_test_only.py, "
        "bbbb00000002 in alembic/versions/bbbb00000002_test_only.py): two branches each "
        "added a revision; join them with `pipenv run alembic merge heads -m 'merge heads'`"
    )

    merge = git(repo, "merge", "-m", "merge b", "b", env=env, check=False)  # pre-merge-commit
    assert merge.returncode != 0, merge.stdout + merge.stderr
    assert two_heads in merge.stdout + merge.stderr
    assert "Not committing merge" in merge.stderr
    assert git(repo, "rev-parse", "HEAD^2", env=env, check=False).returncode != 0  # no merge

    git(repo, "merge", "--abort", env=env)
    merge = git(repo, "merge", "--no-verify", "-m", "merge b", "b", env=env)  # post-merge
    assert two_heads in merge.stdout + merge.stderr
    post_merge = subprocess.run(
        [str(repo / ".git" / "hooks" / "post-merge"), "0"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert post_merge.returncode == 1
    shouted = [line for line in post_merge.stdout.splitlines() if line.startswith("error:")]
    assert len(shouted) == 1 and shouted[0].startswith(two_heads)

    git(tmp_path, "init", "-q", "--bare", "remote.git", env=env)
    git(repo, "remote", "add", "origin", str(tmp_path / "remote.git"), env=env)
    push = git(repo, "push", "origin", "a", env=env, check=False)  # pre-push
    assert push.returncode != 0
    assert two_heads in push.stdout + push.stderr
    ran = re.findall(r"^(.+?)\.{3,}(?:Passed|Failed|Skipped)", push.stdout + push.stderr, re.M)
    assert ran == ["one migration head on the merged tree"]  # first, alone: no tests ran
    assert git(tmp_path / "remote.git", "branch", env=env).stdout == ""


# --- drift -----------------------------------------------------------------------------


def test_drift_gate_passes_on_the_project(sync_engine: Engine):
    """--configured-db: TEST_DATABASE_URL (here a fresh database, while the configured one
    is unreachable), upgraded by the runner."""
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
    assert lines == [
        "drift: the models differ from the migrations: add_column country.drifted; "
        "write a revision: pipenv run alembic-revision -m '...'"
    ]


# --- squawk ----------------------------------------------------------------------------


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
    assert proc.stdout == (
        "squawk: aaaa00000001 test-only revision aaaa00000001: ok; "
        "downgrade undoes the upgrade: ban-drop-table x1\n"
    )


def test_squawk_gate_fails_a_risky_revision_both_ways_naming_file_line_help_and_fix(
    project: Path,
):
    """Upgrade and downgrade SQL are linted; each finding names the revision file and the
    line of the op, squawk's help, the Alembic fix, and the rendered statement."""
    versions = only_revisions(
        project, ("aaaa00000001", None, CLEAN_BASE), ("bbbb00000002", "aaaa00000001", RISKY)
    )
    proc = gates(project, "squawk")
    lines = gate_failure(proc)
    assert "squawk: aaaa00000001 test-only revision aaaa00000001: ok" in proc.stdout
    assert "squawk: bbbb00000002 test-only revision bbbb00000002: 3 problem(s)" in proc.stdout
    assert findings(lines) == {("bbbb00000002", d, rule) for d, rule in RISKY_RULES}

    source = (versions / "bbbb00000002_test_only.py").read_text().splitlines()
    by_rule = {m["rule"]: (m, line) for line in lines if (m := FINDING.match(line))}
    for rule, op_call in [
        ("adding-required-field", 'op.add_column("gadget", sa.Column("weight"'),
        ("require-concurrent-index-creation", 'op.create_index("gadget_name_idx"'),
        ("require-concurrent-index-deletion", 'op.drop_index("gadget_name_idx"'),
    ]:
        match, line = by_rule[rule]
        assert match["file"] == "alembic/versions/bbbb00000002_test_only.py"
        assert source[int(match["line"]) - 1].strip().startswith(op_call), line
        assert f"https://squawkhq.com/docs/{rule}" in line
        assert 'squawk_allow = {"' + rule + '": "<why>"}' in line

    weight, index, drop = (by_rule[r][1] for r in sorted(by_rule))
    assert "Make the field nullable or add a non-VOLATILE DEFAULT" in weight  # squawk's help
    assert 'op.add_column("gadget", sa.Column("weight", ..., nullable=True))' in weight
    assert "[SQL line " in weight and "ADD COLUMN weight BIGINT NOT NULL;]" in weight
    assert "Use `concurrently` to avoid blocking writes." in index
    assert (
        "with op.get_context().autocommit_block(): "
        'op.drop_index("gadget_name_idx", table_name="gadget", postgresql_concurrently=True, '
        'if_exists=True); op.create_index("gadget_name_idx", "gadget", [...], '
        "postgresql_concurrently=True)"
    ) in index
    assert "if_not_exists" not in index  # it would keep an INVALID index after a failed build
    assert (
        'op.drop_index("gadget_name_idx", table_name="gadget", postgresql_concurrently=True, '
        "if_exists=True)"
    ) in drop


VARCHAR_100 = """def upgrade() -> None:
    op.add_column("gadget", sa.Column("code", sa.String(length=100), nullable=True))


def downgrade() -> None:
    op.drop_column("gadget", "code")
"""
squawk_text_allowed = 'squawk_allow = {"prefer-text-field": "test"}\n\n\n'


def widen(old: str, new: str) -> str:
    return f"""def upgrade() -> None:
    op.alter_column("gadget", "code", existing_type={old}, type_={new}, existing_nullable=True)


def downgrade() -> None:
    op.alter_column("gadget", "code", existing_type={new}, type_={old}, existing_nullable=True)
"""


def test_squawk_gate_passes_a_varchar_widening_but_not_a_narrowing(project: Path):
    """String(100) -> String(200) (or Text) changes the catalog only, no table rewrite
    (alembic-pg-guard/tests/test_squawk_rules.py shows it on PostgreSQL); squawk flags it anyway."""
    only_revisions(
        project,
        ("aaaa00000001", None, CLEAN_BASE),
        ("bbbb00000002", "aaaa00000001", squawk_text_allowed + VARCHAR_100),
        (
            "cccc00000003",
            "bbbb00000002",
            widen("sa.String(length=100)", "sa.String(length=200)"),
        ),
    )
    proc = gates(project, "squawk")
    lines = gate_failure(proc)  # the downgrade narrows it back: a rewrite that may cut data
    assert (
        "squawk: cccc00000003 test-only revision cccc00000003: 3 problem(s); "
        "varchar widening x1 (no rewrite)"
    ) in proc.stdout
    assert findings(lines) == {
        ("cccc00000003", "downgrade", "changing-column-type"),
        ("cccc00000003", "downgrade", "prefer-text-field"),
        ("cccc00000003", "downgrade", "narrowing-type-change"),
    }

    versions = project / "alembic" / "versions"
    (versions / "cccc00000003_test_only.py").unlink()
    write_revision(
        versions,
        "cccc00000003",
        "bbbb00000002",
        widen("sa.String(length=100)", "sa.String(length=200)").split("def downgrade")[0]
        + 'def downgrade() -> None:\n    op.execute("SELECT 1")\n',
    )
    proc = gates(project, "squawk")
    assert proc.returncode == 0, proc.stderr
    assert "cccc00000003: ok; varchar widening x1 (no rewrite)" in proc.stdout


MIXED = """def upgrade() -> None:
    op.add_column("gadget", sa.Column("weight", sa.BigInteger(), nullable=True))
    with op.get_context().autocommit_block():
        op.drop_index(
            "gadget_weight_idx", table_name="gadget", postgresql_concurrently=True, if_exists=True
        )
        op.create_index("gadget_weight_idx", "gadget", ["weight"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "gadget_weight_idx", table_name="gadget", postgresql_concurrently=True, if_exists=True
        )
    op.drop_column("gadget", "weight")
"""
MIXED_ALLOW = {"prefer-robust-stmts": "the leftover index is dropped first"}


def test_a_revision_mixing_a_transaction_and_an_autocommit_block_is_refused_unless_it_says_why(
    project: Path,
):
    """The block commits the add_column before it: if the index build then fails, the
    column stays and the revision is unrecorded, and the rerun fails on DuplicateColumn."""
    allow = f"squawk_allow = {MIXED_ALLOW!r}\n\n\n"
    versions = only_revisions(
        project, ("aaaa00000001", None, CLEAN_BASE), ("bbbb00000002", "aaaa00000001", allow + MIXED)
    )
    lines = gate_failure(gates(project, "squawk"))
    assert findings(lines) == {
        ("bbbb00000002", "upgrade", "mixed-autocommit-block"),
        ("bbbb00000002", "downgrade", "mixed-autocommit-block"),
    }
    up = next(line for line in lines if " upgrade: mixed-autocommit-block" in line)
    assert up.startswith("squawk: alembic/versions/bbbb00000002_test_only.py:15: ")  # add_column
    assert "ALTER TABLE gadget ADD COLUMN weight BIGINT" in up
    assert "a rerun repeats them" in up
    assert 'squawk_allow = {"mixed-autocommit-block": "<why a rerun is safe>"}' in up

    reason = {**MIXED_ALLOW, "mixed-autocommit-block": "ADD COLUMN IF NOT EXISTS, test only"}
    write_revision(
        versions, "bbbb00000002", "aaaa00000001", f"squawk_allow = {reason!r}\n\n\n" + MIXED
    )
    proc = gates(project, "squawk")
    assert proc.returncode == 0, proc.stderr
    assert (
        "allowed mixed-autocommit-block upgrade x1, downgrade x1 (ADD COLUMN IF NOT EXISTS, "
        "test only)"
    ) in proc.stdout


def test_the_projects_revisions_pass_squawk_and_the_atomicity_rule(settings: Settings):
    """Its autocommit revisions (d6afc1b465f9, 4846b796fdab, 185c925ed393) included."""
    assert run_gates("squawk", alembic_config(settings)) == []


def test_squawk_allow_in_a_revision_allows_those_rules_there_only(project: Path):
    allow = (
        "squawk_allow = {\n"
        '    "adding-required-field": "gadget is empty when this runs",\n'
        '    "require-concurrent-index-creation": "gadget is empty when this runs",\n'
        '    "require-concurrent-index-deletion": "gadget is empty when this runs",\n'
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
        "allowed adding-required-field upgrade x1 (gadget is empty when this runs); "
        "allowed require-concurrent-index-creation upgrade x1 (gadget is empty when this runs); "
        "allowed require-concurrent-index-deletion downgrade x1 (gadget is empty when this runs)"
    ) in proc.stdout
    assert "squawk: cccc00000003 test-only revision cccc00000003: 3 problem(s)" in proc.stdout
    assert {rev for rev, _, _ in findings(lines)} == {"cccc00000003"}

    (Path(project) / "alembic" / "versions" / "cccc00000003_test_only.py").unlink()
    assert gates(project, "squawk").returncode == 0


RISKY_ALLOWED = (
    '"adding-required-field": "x", "require-concurrent-index-creation": "x", '
    '"require-concurrent-index-deletion": "x"'
)


@pytest.mark.parametrize(
    "allow,problem",
    [
        (
            f'{{{RISKY_ALLOWED}, "prefer-text-field": "stale"}}',
            "allows 'prefer-text-field' but neither its upgrade nor its downgrade breaks it",
        ),
        (
            f'{{{RISKY_ALLOWED}, "no-such-rule": "typo"}}',
            "allows 'no-such-rule' but neither its upgrade nor its downgrade breaks it; "
            "remove the entry (or fix its spelling",
        ),
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
    problems = run_gates("squawk", scratch_config(settings, project / "alembic"))
    ours = [line for line in problems if "bbbb00000002" in line]
    assert len(ours) == 1 and problem in ours[0], problems
    assert "alembic/versions/bbbb00000002_test_only.py: bbbb00000002: " in ours[0]
    assert "squawk: bbbb00000002 test-only revision bbbb00000002: 1 problem(s)" in (
        capsys.readouterr().out
    )


# --- a broken revision: one line, never a traceback ------------------------------------


def broken(body: str) -> str:
    return f"def upgrade() -> None:\n    {body}\n\n\ndef downgrade() -> None:\n    pass\n"


@pytest.mark.parametrize(
    "gate,body,expected",
    [
        (
            "squawk",
            "op.execute(undefined_name)",
            "squawk: alembic/versions/bbbb00000002_test_only.py:12: bbbb00000002 upgrade does "
            "not render offline (alembic upgrade aaaa00000001:bbbb00000002 --sql): NameError: "
            "name 'undefined_name' is not defined",
        ),
        (
            "squawk",
            'op.get_bind().execute(sa.text("SELECT 1")).all()',
            "squawk: alembic/versions/bbbb00000002_test_only.py:12: bbbb00000002 upgrade does "
            "not render offline (alembic upgrade aaaa00000001:bbbb00000002 --sql): "
            "AttributeError: 'NoneType' object has no attribute 'all'; code that needs a "
            "database (op.get_bind(), reading rows) must be guarded by "
            "`if not context.is_offline_mode():`",
        ),
        (
            "heads",
            'op.execute("SELECT 1"',
            "heads: alembic/versions/bbbb00000002_test_only.py:12: does not load: SyntaxError: "
            "'(' was never closed",
        ),
    ],
    ids=["python-error", "needs-a-connection", "syntax-error"],
)
def test_a_broken_revision_is_one_line_naming_its_file(project: Path, gate, body, expected):
    only_revisions(
        project, ("aaaa00000001", None, CLEAN_BASE), ("bbbb00000002", "aaaa00000001", broken(body))
    )
    (line,) = gate_failure(gates(project, gate))
    assert line.startswith(expected), line


def test_a_type_change_without_using_is_one_line_from_drift(project: Path, sync_engine: Engine):
    """On PostgreSQL: varchar -> integer needs USING; the gate names the file and the hint."""
    only_revisions(
        project,
        ("aaaa00000001", None, CLEAN_BASE),
        (
            "bbbb00000002",
            "aaaa00000001",
            broken(
                'op.alter_column("gadget", "name", type_=sa.Integer(), existing_type=sa.Text())'
            ),
        ),
    )
    with fresh_database(sync_engine) as url:
        proc = gates(project, "drift", "--configured-db", TEST_DATABASE_URL=url_string(url))
    (line,) = gate_failure(proc)
    assert line == (
        "drift: alembic/versions/bbbb00000002_test_only.py:12: fails on a fresh database "
        '(the runner, to head): DatatypeMismatch: column "name" cannot be cast automatically '
        'to type integer; HINT: You might need to specify "USING name::integer".'
    )


# --- wiring ----------------------------------------------------------------------------


def test_gates_run_in_ci_hooks_and_pipfile_scripts():
    scripts = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["scripts"]
    assert scripts["check-migrations"] == "python -m alembic_pg_guard check all"
    for gate in ("heads", "drift", "squawk"):
        assert scripts[f"check-{gate}"] == f"python -m alembic_pg_guard check {gate}"

    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "pipenv run check-migrations" in ci
    assert ci.index("pipenv run check-migrations") < ci.index("pipenv run test\n")

    config = yaml.safe_load((PROJECT_ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    for name, gate in (("heads", "heads"), ("gates", "all")):
        hook = hooks[f"migration-{name}"]
        assert hook["entry"] == f".venv/bin/python -m alembic_pg_guard check {gate}"
        assert hook["pass_filenames"] is False
        files = re.compile(hook["files"])
        assert files.search("src/models.py")
        assert files.search("alembic/versions/2026-01-01_0000_abc_x.py")
        assert files.search("alembic/env.py")
        assert not files.search("src/routes/country.py")

    # On the merged tree, whatever files the merge touched; first on pre-push, alone.
    assert set(config["default_install_hook_types"]) >= {"pre-merge-commit", "post-merge"}
    merged = hooks["migration-heads-merged"]
    assert merged["entry"] == ".venv/bin/python -m alembic_pg_guard check heads"
    assert set(merged["stages"]) == {"pre-merge-commit", "post-merge", "pre-push"}
    assert merged["always_run"] and merged["fail_fast"]
    pre_push = [h["id"] for h in hooks.values() if "pre-push" in h.get("stages", [])]
    assert pre_push[0] == "migration-heads-merged", pre_push

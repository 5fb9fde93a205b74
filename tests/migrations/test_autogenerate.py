"""docs/migrations.md's autogenerate walkthrough, and the rename guard, in a scratch copy of the
project run through the alembic command line."""

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.helpers import (
    ScratchProject,
    add_to_country_model,
    alembic_failure,
    child_env,
    copy_project,
    fresh_database,
    run_python,
    unreachable_url,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def ruff_problems(project: Path, revision: Path) -> str:
    """What `ruff check` and `ruff format --check` (the project's pyproject.toml, as the
    lint and the git hooks run them) say of a revision file: empty when it passes both."""
    output = ""
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            ["ruff", *args, str(revision)],
            cwd=project,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        output += proc.stdout + proc.stderr if proc.returncode else ""
    return output


def test_autogenerate_walkthrough_and_rename_guard(sync_engine: Engine, tmp_path: Path):
    """The documented workflow, for real: nothing to do → add a column → autogenerate → up →
    down; then a rename is refused by the guard, unless explicitly allowed."""
    project = copy_project(tmp_path / "project")
    versions = project / "alembic" / "versions"
    models = project / "src" / "models.py"
    with fresh_database(sync_engine) as url:
        env = child_env(url)

        def alembic(*args: str, **extra: str):
            return run_python("-m", "alembic", *args, cwd=project, env={**env, **extra})

        def new_files(before: set[Path]) -> list[Path]:
            return sorted(set(versions.glob("*.py")) - before)

        def columns() -> set[str]:
            engine = create_engine(url, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    return set(
                        conn.scalars(
                            text(
                                "SELECT column_name FROM information_schema.columns "
                                "WHERE table_name = 'country'"
                            )
                        )
                    )
            finally:
                engine.dispose()

        assert alembic("upgrade", "head").returncode == 0
        files = set(versions.glob("*.py"))

        proc = alembic("revision", "--autogenerate", "-m", "nothing")
        assert proc.returncode == 0, proc.stderr
        assert "No schema changes detected: no revision written." in proc.stdout
        assert new_files(files) == []

        add_to_country_model(
            models, "    walkthrough_capital: Mapped[str | None] = mapped_column(String(100))"
        )
        proc = alembic("revision", "--autogenerate", "-m", "add capital")
        assert proc.returncode == 0, proc.stderr
        (revision_file,) = new_files(files)
        source = revision_file.read_text()
        assert "op.add_column" in source and "walkthrough_capital" in source
        assert "\t" not in source and source.endswith("\n")  # ruff formatted it
        # Both imports used: the hook dropped the template's noqa (RUF100), and ruff passes.
        assert "import sqlalchemy as sa\nfrom alembic import op\n" in source
        assert ruff_problems(project, revision_file) == ""

        assert alembic("upgrade", "head").returncode == 0
        assert "walkthrough_capital" in columns()
        proc = alembic("downgrade", "-1")
        assert proc.returncode == 0, proc.stderr
        assert "walkthrough_capital" not in columns()
        assert alembic("upgrade", "head").returncode == 0

        models.write_text(models.read_text().replace("walkthrough_capital", "walkthrough_city"))
        files = set(versions.glob("*.py"))
        proc = alembic("revision", "--autogenerate", "-m", "rename capital")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert output.count("refusing to write a revision that drops and adds") == 1
        assert (
            "op.alter_column('country', 'walkthrough_capital', new_column_name='walkthrough_city')"
        ) in output
        assert "add country.walkthrough_city, write to both and backfill it" in output
        assert "Traceback" not in output and "<table>" not in output
        assert new_files(files) == []

        proc = alembic("-x", "allow_drop_add=1", "revision", "--autogenerate", "-m", "drop add")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        allowed.unlink()

        proc = alembic("revision", "--autogenerate", "-m", "drop add", ALEMBIC_ALLOW_DROP_ADD="1")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        source = allowed.read_text()
        assert "op.drop_column" in source and "op.add_column" in source


def test_a_hand_written_revision_imports_op_and_sa_and_passes_ruff(tmp_path: Path):
    """`alembic revision -m` (no autogenerate, no database): the ruff hook keeps the template's
    unused op and sa imports, so the first op./sa. call written into it works."""
    project = copy_project(tmp_path / "project")
    versions = project / "alembic" / "versions"
    before = set(versions.glob("*.py"))
    proc = run_python(
        "-m", "alembic", "revision", "-m", "x", cwd=project, env=child_env(unreachable_url())
    )
    assert proc.returncode == 0, proc.stderr
    (revision_file,) = set(versions.glob("*.py")) - before
    source = revision_file.read_text()
    assert re.search(r"^import sqlalchemy as sa\b", source, re.M), source
    assert re.search(r"^from alembic import op\b", source, re.M), source
    assert ruff_problems(project, revision_file) == ""


RENAME_TABLE = {'"subdivision"': '"region"', '"subdivision.id"': '"region.id"'}


REVISION_FROM_PYTHON = """
from alembic import command
from src.config import read_settings
from src.migrations import alembic_config
command.revision(alembic_config(read_settings()), message="from python", autogenerate=True)
"""


def test_a_table_rename_is_refused_with_its_names_once_unless_allowed(project: ScratchProject):
    """A __tablename__ change autogenerates drop table + create table: refused, naming both
    tables, with the in-place and the expand/contract way; the opt-out writes it."""
    for old, new in RENAME_TABLE.items():
        project.edit_models(old, new)
    before = project.revisions()

    proc = project.alembic("revision", "--autogenerate", "-m", "rename subdivision")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert output.count("refusing") == 1  # once: not also as alembic's "FAILED: ..."
    (line,) = [line for line in proc.stderr.splitlines() if "refusing" in line]
    assert line.startswith("error: refusing to write a revision that drops and adds")
    assert "drops table 'subdivision' and creates 'region' with the same columns" in line
    assert "op.rename_table('subdivision', 'region')" in line
    assert "expand/contract instead: create 'region', write to both" in line
    assert "ALEMBIC_ALLOW_DROP_ADD=1" in line
    assert "Traceback" not in output
    assert project.revisions() == before

    proc = project.alembic("check")  # runs the same hook: it reports, never refuses
    assert proc.returncode != 0 and "refusing" not in proc.stdout + proc.stderr
    assert "New upgrade operations detected: [('add_table', Table('region'" in proc.stdout

    proc = project.alembic("revision", "--autogenerate", "-m", "drop add", **ALLOW)
    assert proc.returncode == 0, proc.stderr
    source = project.new_revision(before)
    assert (
        'op.drop_table("subdivision")' in source and 'op.create_table(\n        "region"' in source
    )


ALLOW = {"ALEMBIC_ALLOW_DROP_ADD": "1"}


def test_autogenerate_called_from_python_skips_empty_revisions_and_guards_renames(
    project: ScratchProject,
):
    """command.revision(cfg, autogenerate=True), as a script or a tool would call it: the same
    empty-revision skip and rename guard as the command line."""
    before = project.revisions()

    proc = project.run("-c", REVISION_FROM_PYTHON)
    assert proc.returncode == 0, proc.stderr
    assert "No schema changes detected: no revision written." in proc.stdout
    assert project.revisions() == before

    project.edit_models("    official_name: Mapped", "    official: Mapped")
    proc = project.run("-c", REVISION_FROM_PYTHON)
    assert proc.returncode != 0
    assert (
        "op.alter_column('country', 'official_name', new_column_name='official')"
    ) in proc.stderr
    assert project.revisions() == before

    proc = project.run("-c", REVISION_FROM_PYTHON, **ALLOW)
    assert proc.returncode == 0, proc.stderr
    source = project.new_revision(before)
    assert "op.drop_column" in source and "op.add_column" in source


def test_a_table_renamed_without_its_foreign_keys_is_one_line(project: ScratchProject):
    """__tablename__ changed but a ForeignKey still names the old table: autogenerate stops
    in one line naming it, not SQLAlchemy's traceback."""
    project.edit_models('__tablename__ = "subdivision"', '__tablename__ = "region"')
    before = project.revisions()

    proc = project.alembic("revision", "--autogenerate", "-m", "rename subdivision")
    assert alembic_failure(proc) == (
        "error: src/models.py does not hold together: Foreign key associated with column "
        "'region.parent_id' could not find table 'subdivision' with which to generate a "
        "foreign key to target column 'id'; fix that ForeignKey"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert project.revisions() == before

"""The guard stands alone: an Alembic project that is not this repository's (one model,
`alembic init`, env.py's lines from the README), the package installed from its path,
on a real PostgreSQL. Nothing of the surrounding project is importable there."""

import re
from pathlib import Path

import pytest
from guard_helpers import Project, clean_env, install_from_path, make_project
from sqlalchemy import URL, create_engine, inspect, text
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_from_path(tmp_path_factory.mktemp("site"))


@pytest.fixture
def project(tmp_path: Path, database: URL, pg_server: URL, site: Path) -> Project:
    scratch = pg_server.render_as_string(hide_password=False)
    env = clean_env(PYTHONPATH=str(site), ALEMBIC_PG_GUARD_SCRATCH_URL=scratch)
    return make_project(tmp_path / "gadgets", database, env)


def one_error(proc) -> str:
    """Failed the documented way: exit 1, no traceback, the last stderr line `error: ...`."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1].removeprefix("error: ")


def test_the_installed_package_is_the_one_imported(project: Project, site: Path):
    proc = project.run("-c", "import alembic_pg_guard, sys; print(alembic_pg_guard.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(site), proc.stdout
    proc = project.run("-c", "import src")
    assert "ModuleNotFoundError" in proc.stderr, "the surrounding project leaked in"


def test_runner_gates_history_and_rename_guard_in_a_project_of_its_own(project: Project):
    # Autogenerate writes the first revision; the locked runner applies it.
    made = project.alembic("revision", "--autogenerate", "-m", "create gadget")
    assert made.returncode == 0, made.stderr
    (first,) = project.revision_files()
    assert "op.create_table(" in first.read_text()
    applied = project.guard("migrate")
    assert applied.returncode == 0, applied.stderr
    assert re.fullmatch(r"database upgraded from empty to \w+\n", applied.stdout), applied.stdout
    engine = create_engine(project.url, poolclass=NullPool)
    try:
        assert inspect(engine).has_table("gadget")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT state FROM alembic_version_history")).all()
        assert [r.state for r in rows] == ["applied"]
    finally:
        engine.dispose()
    assert project.guard("migrate").stdout.startswith("database already at head")

    # The gates, static and on a throwaway database of the scratch server.
    for gate in ("heads", "squawk", "drift"):
        proc = project.guard("check", gate)
        assert proc.returncode == 0, (gate, proc.stdout, proc.stderr)
        assert f"{gate}: " in proc.stdout and ": ok" in proc.stdout, (gate, proc.stdout)
    models = project.root / "models.py"
    models.write_text(models.read_text() + "    colour: Mapped[str | None] = mapped_column(Text)\n")
    drift = one_error(project.guard("check", "drift"))
    assert drift.startswith(
        "drift: the models differ from the migrations: add_column gadget.colour"
    )

    # A second revision applied, then one inserted below it: the runner refuses, naming it.
    second = project.alembic("revision", "--autogenerate", "-m", "add colour")
    assert second.returncode == 0, second.stderr
    assert project.guard("migrate").returncode == 0
    down = re.search(r"^revision: str = '(\w+)'", first.read_text(), re.M)[1]
    (added,) = [p for p in project.revision_files() if p != first]
    inserted = "abcdef123456"
    (project.versions / f"{inserted}_inserted.py").write_text(
        f"revision = {inserted!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    added.write_text(added.read_text().replace(f"= {down!r}", f"= {inserted!r}"))
    refused = one_error(project.guard("migrate"))
    assert refused.startswith(f"history edited: revision {inserted} sits below"), refused

    # The rename guard: a renamed column autogenerates drop + add, which it refuses.
    added.write_text(added.read_text().replace(f"= {inserted!r}", f"= {down!r}"))
    (project.versions / f"{inserted}_inserted.py").unlink()
    models.write_text(models.read_text().replace("colour:", "color:"))
    before = project.revision_files()
    renamed = one_error(project.alembic("revision", "--autogenerate", "-m", "rename colour"))
    assert renamed.startswith("refusing to write a revision that drops and adds what looks like")
    assert "drops column 'colour' and adds 'color'" in renamed
    assert project.revision_files() == before

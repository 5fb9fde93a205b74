"""Data revisions load the data shipped with them (alembic/versions/data/), checked by its
sha256: a different pycountry installed (here a fake one, first on PYTHONPATH) changes
nothing, neither what the upgrade loads nor what the ISO downgrade tells from client rows."""

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.helpers import (
    PROJECT_ROOT,
    alembic_failure,
    child_env,
    copy_project,
    fresh_engine,
    run_python,
)

pytestmark = pytest.mark.slow  # migrates fresh databases in subprocesses

DATA = PROJECT_ROOT / "alembic" / "versions" / "data" / "iso3166_pycountry_26.2.16.json"
BELOW_ISO_LOAD = "486626707430"  # the revision before the one that loads the ISO data
# Another release of the library: fewer entries, one renamed, one new.
FAKE_PYCOUNTRY = """
from types import SimpleNamespace as E

countries = [
    E(alpha_2="FR", alpha_3="FRA", numeric="250", name="France (another release)"),
    E(alpha_2="QQ", alpha_3="QQQ", numeric="999", name="Not In The Shipped Data"),
]
subdivisions = [
    E(code="FR-ARA", country_code="FR", name="Another Name", type="Region", parent_code=None),
    E(code="FR-01", country_code="FR", name="Ain", type="Department", parent_code="FR-ARA"),
]
"""


@pytest.fixture
def other_pycountry(tmp_path: Path) -> str:
    """A PYTHONPATH whose `pycountry` is not the pinned one."""
    package = tmp_path / "fake" / "pycountry"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_PYCOUNTRY)
    return str(package.parent)


def shipped() -> tuple[list[tuple], list[tuple]]:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    return [tuple(r) for r in data["countries"]], [tuple(r) for r in data["subdivisions"]]


def iso_rows(engine: Engine) -> tuple[list[tuple], list[tuple]]:
    with engine.connect() as conn:
        countries = conn.execute(
            text("SELECT alpha2, alpha3, numeric, name, official_name FROM country ORDER BY 1")
        )
        subdivisions = conn.execute(
            text(
                "SELECT s.code, c.alpha2, s.name, s.type, p.code FROM subdivision s "
                "JOIN country c ON c.id = s.country_id "
                "LEFT JOIN subdivision p ON p.id = s.parent_id ORDER BY 1"
            )
        )
        return [tuple(r) for r in countries], [tuple(r) for r in subdivisions]


def test_the_upgrade_loads_the_shipped_data_whatever_pycountry_is_installed(
    sync_engine, other_pycountry
):
    with fresh_engine(sync_engine) as (url, engine):
        env = child_env(url, PYTHONPATH=other_pycountry)
        proc = run_python("-m", "alembic_pg_guard", "migrate", cwd=PROJECT_ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        assert iso_rows(engine) == shipped()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM country WHERE source <> 'iso'")) == 0


def test_the_iso_downgrade_tells_its_rows_apart_whatever_pycountry_is_installed(
    sync_engine, other_pycountry
):
    with fresh_engine(sync_engine) as (url, engine):
        assert run_python("-m", "alembic_pg_guard", "migrate", cwd=PROJECT_ROOT,
                          env=child_env(url)).returncode == 0  # fmt: skip
        env = child_env(url, PYTHONPATH=other_pycountry)
        proc = run_python("-m", "alembic", "downgrade", BELOW_ISO_LOAD, cwd=PROJECT_ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        with engine.connect() as conn:  # nothing kept as if a client had written it
            for table in ("country", "subdivision"):
                assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table


def test_a_changed_data_file_is_refused_and_nothing_of_it_recorded(sync_engine, tmp_path):
    root = copy_project(tmp_path / "project")
    data = root / "alembic" / "versions" / "data" / DATA.name
    data.write_text(data.read_text(encoding="utf-8").replace('"Andorra"', '"Andorre"'))
    with fresh_engine(sync_engine) as (url, engine):
        env = child_env(url)
        line = alembic_failure(run_python("-m", "alembic_pg_guard", "migrate", cwd=root, env=env))
        assert line.startswith("error: revision 847f19ae2edf (backfill country alpha3) failed")
        assert f"{DATA.name} is missing or not the data revision" in line, line
        assert line.endswith("(new data goes in a new revision with its own file)"), line
        with engine.connect() as conn:
            # The first revision that reads the file is not recorded, nor any after it.
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "08f1eb8c3f28"
            assert conn.scalar(text("SELECT count(*) FROM country")) == 0

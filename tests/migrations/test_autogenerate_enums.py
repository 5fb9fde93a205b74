"""Enums and CHECK constraints through autogenerate and the drift gate (alembic-pg-guard),
in a scratch copy of the project run as a user would: models edited, `alembic revision
--autogenerate`, `check-drift`, `migrate`."""

import pytest

from tests.helpers import ScratchProject

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

ENUM_LABELS = """
    SELECT array_to_string(array_agg(e.enumlabel ORDER BY e.enumsortorder), ',')
    FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = :name"""


def labels(project: ScratchProject, name: str) -> str | None:
    return project.query(ENUM_LABELS, name=name)[0][0]


def drift(project: ScratchProject):
    """`pipenv run check-drift --configured-db` on the scratch database."""
    return project.run("-m", "alembic_pg_guard", "check", "drift", "--configured-db")


def autogenerate(project: ScratchProject, message: str) -> str:
    before = project.revisions()
    proc = project.alembic("revision", "--autogenerate", "-m", message)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return project.new_revision(before)


def test_a_new_enum_column_creates_its_type_and_the_downgrade_drops_it(project: ScratchProject):
    project.edit_models(
        '    __tablename__ = "country"\n',
        '    __tablename__ = "country"\n'
        "    tier: Mapped[str | None] = mapped_column(Enum('gold', 'silver', name='tier'))\n",
    )
    source = autogenerate(project, "add tier")
    assert 'sa.Enum("gold", "silver", name="tier").create(op.get_bind())' in source

    proc = project.alembic("upgrade", "head")
    assert proc.returncode == 0, proc.stderr  # today: type "tier" does not exist
    assert labels(project, "tier") == "gold,silver"
    assert project.query("SELECT count(*) FROM country WHERE tier IS NULL")[0][0] > 0

    proc = project.alembic("downgrade", "-1")
    assert proc.returncode == 0, proc.stderr
    assert labels(project, "tier") is None  # the type went with the column
    assert not project.query("SELECT 1 FROM information_schema.columns WHERE column_name = 'tier'")


def test_enum_values_added_and_removed_are_seen_written_and_removal_refuses_used_values(
    project: ScratchProject,
):
    assert labels(project, "country_source") == "iso,client"

    # Add a value: drift sees it before any revision exists, then autogenerate writes it.
    project.edit_models('    CLIENT = "client"\n', '    CLIENT = "client"\n    IMPORT = "import"\n')
    proc = drift(project)
    assert proc.returncode == 1
    assert (
        "drift: the models differ from the migrations: add_enum_value (enum of "
        "country.source): ['iso', 'client'] -> ['iso', 'client', 'import']"
    ) in proc.stderr
    source = autogenerate(project, "add import source")
    assert "op.add_enum_value(" in source and "'import'" in source.replace('"', "'")
    assert project.alembic("upgrade", "head").returncode == 0
    assert labels(project, "country_source") == "iso,client,import"
    assert drift(project).returncode == 0

    # Remove it while a row uses it: written, seen by drift, and the upgrade refuses.
    project.query(
        "INSERT INTO country (alpha2, alpha3, name, source) VALUES ('XI', 'XII', 'X', 'import')"
    )
    project.edit_models('    IMPORT = "import"\n', "")
    proc = drift(project)
    assert proc.returncode == 1
    assert (
        "change_enum_variants (enum of country.source): "
        "['iso', 'client', 'import'] -> ['iso', 'client']"
    ) in proc.stderr
    source = autogenerate(project, "remove import source")
    assert "op.sync_enum_values(" in source
    assert max(len(line) for line in source.splitlines()) <= 100  # passes `pipenv run lint`
    proc = project.run("-m", "alembic_pg_guard", "migrate")
    assert proc.returncode != 0
    assert (
        "cannot remove 'import' from enum country_source: rows of country.source still use "
        "it; update or delete those rows first"
    ) in proc.stdout + proc.stderr
    assert project.query("SELECT source::text FROM country WHERE alpha2 = 'XI'") == [("import",)]
    assert labels(project, "country_source") == "iso,client,import"

    # Once no row uses it, the same revision applies; its downgrade adds it back.
    project.query("DELETE FROM country WHERE alpha2 = 'XI'")
    proc = project.run("-m", "alembic_pg_guard", "migrate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert labels(project, "country_source") == "iso,client"
    assert drift(project).returncode == 0
    assert project.alembic("downgrade", "-1").returncode == 0
    assert labels(project, "country_source") == "iso,client,import"


def test_a_check_constraint_is_seen_by_drift_and_written_by_autogenerate(project: ScratchProject):
    project.edit_models(
        '    __table_args__ = (name_search_index("country", name),)\n',
        "    __table_args__ = (\n"
        '        name_search_index("country", name),\n'
        '        CheckConstraint("numeric ~ \'^[0-9]{3}$\'", name="numeric_digits"),\n'
        "    )\n",
    )
    project.edit_models("from sqlalchemy import ", "from sqlalchemy import CheckConstraint, ")
    proc = drift(project)
    assert proc.returncode == 1  # today: drift ok
    assert (
        "drift: the models differ from the migrations: add_constraint "
        "country_numeric_digits_check on country CHECK (numeric ~ '^[0-9]{3}$')"
    ) in proc.stderr

    source = autogenerate(project, "check numeric")
    assert "op.create_check_constraint(" in source
    # It passes the pre-commit lint as written: no unused `import sqlalchemy as sa`.
    lint = project.run("-m", "ruff", "check", "alembic/versions")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "country_numeric_digits_check" in source
    assert project.alembic("upgrade", "head").returncode == 0
    assert project.query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'country_numeric_digits_check'"
    ) == [("CHECK (((\"numeric\")::text ~ '^[0-9]{3}$'::text))",)]
    assert drift(project).returncode == 0  # no false positive once applied

    # Dropped from the models: drift sees the constraint the database still has.
    project.edit_models(
        '        CheckConstraint("numeric ~ \'^[0-9]{3}$\'", name="numeric_digits"),\n', ""
    )
    proc = drift(project)
    assert proc.returncode == 1
    assert "remove_constraint country_numeric_digits_check on country" in proc.stderr

"""The rename guard's advice names the project's own way to run alembic (its Hints): a
newcomer copies `alembic revision -m` into a fresh terminal, where only `pipenv run alembic`
(say) exists."""

from alembic_pg_guard._autogenerate import Rename, refusal
from alembic_pg_guard._settings import Hints


def test_the_empty_revision_command_is_the_projects_alembic():
    line = refusal(
        [Rename("country", "official_name", "formal_name")], Hints(alembic="pipenv run alembic")
    )
    assert "write an empty revision (pipenv run alembic revision -m '...') with: " in line, line

"""Issue 22's narrative on this project's country table: a revision narrowing `name` with a
USING cast, on a database holding a client's longer name, is refused before it cuts it."""

from pathlib import Path

import pytest
from alembic_pg_guard import HISTORY_TABLE, GuardError
from sqlalchemy import Engine, text

from src.config import Settings
from tests.helpers import (
    current_version,
    fresh_engine,
    scratch_config,
    upgrade,
    write_revision_on_head,
)

pytestmark = pytest.mark.slow  # the whole history, with the ISO data

NARROWING = "5407da7a1055"
CLIENT_NAME = "Federated Autonomous Archipelago of the Northern Made-Up Test Island"


def test_narrowing_name_with_a_using_cast_keeps_a_client_s_longer_name(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    """varchar(200) -> varchar(50) with postgresql_using="name::varchar(50)" cut a client's
    68-character name to 50 and recorded the revision; now it is refused, naming the row,
    and the name, the column type and the version stay as they were."""
    assert len(CLIENT_NAME) == 68
    head = write_revision_on_head(
        scratch_alembic / "versions",
        NARROWING,
        "def upgrade() -> None:\n"
        '    op.alter_column("country", "name", type_=sa.String(50),\n'
        '                    existing_type=sa.String(200), postgresql_using="name::varchar(50)")\n'
        "\n\n"
        "def downgrade() -> None:\n"
        '    op.alter_column("country", "name", type_=sa.String(200),\n'
        "                    existing_type=sa.String(50))\n",
    )
    with fresh_engine(sync_engine) as (url, engine):
        fresh = settings.for_database(url)
        upgrade(fresh)
        with engine.begin() as conn:
            client = conn.scalar(
                text(
                    "INSERT INTO country (alpha2, alpha3, name) VALUES ('QZ', 'QZZ', :n)"
                    " RETURNING id"
                ),
                {"n": CLIENT_NAME},
            )

        with pytest.raises(GuardError) as refused:
            upgrade(fresh, cfg=scratch_config(fresh, scratch_alembic))
        assert str(refused.value) == (
            f"revision {NARROWING} (test-only revision {NARROWING}) would lose data: ALTER "
            "TABLE country ALTER COLUMN name TYPE VARCHAR(50) USING name::varchar(50): 1 row "
            f"of country has name longer than 50 characters (e.g. id={client}, 68 characters); "
            "nothing was changed: clean or shorten those rows first, in an earlier revision or "
            "by hand, or keep the wider type, then migrate again"
        )
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT name FROM country WHERE id = :i"), {"i": client}) == (
                CLIENT_NAME
            )
            assert (
                conn.scalar(
                    text(
                        "SELECT character_maximum_length FROM information_schema.columns "
                        "WHERE table_name = 'country' AND column_name = 'name'"
                    )
                )
                == 200
            )
            recorded = conn.scalar(
                text(f"SELECT count(*) FROM {HISTORY_TABLE} WHERE revision = :r"), {"r": NARROWING}
            )
            assert recorded == 0
        assert current_version(engine) == {head}

"""The API's least-privilege role: what it may do, what it may not, kept by the runner."""

import pytest
from alembic_pg_guard import GuardError
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from src.config import Settings
from src.db import Database
from src.main import create_app
from tests.helpers import APP_ROLE, asgi_client, fresh_database, upgrade, url_string


def app_engine(settings: Settings) -> Engine:
    """psycopg2, logged in exactly as the API logs in."""
    return create_engine(
        settings.app_async_url.set(drivername="postgresql+psycopg2"), poolclass=NullPool
    )


def pgcode(engine: Engine, sql: str) -> str | None:
    """The SQLSTATE `sql` fails with (None if it succeeds); always rolled back."""
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql(sql)
        except DBAPIError as exc:
            return exc.orig.pgcode
        finally:
            conn.rollback()
    return None


async def test_the_api_logs_in_as_its_own_unprivileged_role(settings: Settings, migrated: Engine):
    database = Database(settings)
    try:
        row = await database.read(
            lambda reads: reads.one(
                text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            )
        )
        user, is_super = row["current_user"], row["rolsuper"]
    finally:
        await database.dispose()
    assert (user, is_super) == (APP_ROLE, False)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE intruder (id int)",
        "DROP TABLE subdivision",
        "ALTER TABLE country ADD COLUMN intruder int",
        "TRUNCATE country CASCADE",
        "CREATE INDEX intruder ON country (name)",
        "SELECT rolpassword FROM pg_authid",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "CREATE ROLE intruder",
        "CREATE TEMP TABLE intruder (id int)",
        "UPDATE alembic_version SET version_num = version_num",
        "DELETE FROM alembic_version",
    ],
)
def test_the_api_role_cannot(settings: Settings, migrated: Engine, sql: str):
    assert pgcode(app_engine(settings), sql) == "42501"  # insufficient_privilege


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM country",
        "SELECT version_num FROM alembic_version",
        "INSERT INTO country (alpha2, alpha3, name) VALUES ('QQ', 'QQQ', 'Q')",
        "UPDATE country SET name = name WHERE alpha2 = 'FR'",
        "DELETE FROM subdivision WHERE code = 'FR-75C'",
        "INSERT INTO subdivision (country_id, code, name, type) "
        "SELECT id, 'FR-QQ', 'Q', 'test' FROM country WHERE alpha2 = 'FR'",
    ],
)
def test_the_api_role_can_read_and_write_rows(settings: Settings, migrated: Engine, sql: str):
    assert pgcode(app_engine(settings), sql) is None


def test_tables_added_later_are_granted_and_the_runner_is_idempotent(
    settings: Settings, sync_engine: Engine
):
    with fresh_database(sync_engine) as url:
        fresh = settings.for_database(url_string(url))
        assert upgrade(fresh).endswith(f"API role {APP_ROLE} up to date")
        owner = create_engine(url, poolclass=NullPool)
        with owner.begin() as conn:  # a later revision, say: created by the owner
            conn.exec_driver_sql("CREATE TABLE later (id serial PRIMARY KEY, note text)")
        app = app_engine(fresh)
        assert pgcode(app, "INSERT INTO later (note) VALUES ('x')") is None
        assert pgcode(app, "DROP TABLE later") == "42501"
        again = upgrade(fresh)
        assert again.startswith("database already at head"), again
        owner.dispose()


def test_the_runner_keeps_the_password_in_step(settings: Settings, migrated: Engine):
    changed = settings.model_copy(update={"postgres_app_password": SecretStr("a-new-password")})
    try:
        upgrade(changed)
        assert pgcode(app_engine(changed), "SELECT 1") is None
        with pytest.raises(OperationalError, match="password authentication failed"):
            app_engine(settings).connect()
    finally:
        upgrade(settings)
    assert pgcode(app_engine(settings), "SELECT 1") is None


def test_refuses_the_owner_or_a_privileged_role_as_the_api_role(
    settings: Settings, migrated: Engine
):
    owner = settings.model_copy(update={"postgres_app_user": settings.sync_url.username})
    with pytest.raises(GuardError, match="the schema owner that runs migrations") as info:
        upgrade(owner)
    assert "\n" not in str(info.value)

    with migrated.connect() as conn:
        conn.execute(text("COMMIT"))
        conn.exec_driver_sql("CREATE ROLE too_mighty LOGIN CREATEROLE")
    try:
        mighty = settings.model_copy(update={"postgres_app_user": "too_mighty"})
        with pytest.raises(GuardError, match="must not"):
            upgrade(mighty)
    finally:
        with migrated.connect() as conn:
            conn.execute(text("COMMIT"))
            conn.exec_driver_sql("DROP ROLE too_mighty")


def test_an_unknown_role_without_a_password_is_one_line(settings: Settings, migrated: Engine):
    ghost = settings.model_copy(
        update={"postgres_app_user": "no_such_role", "postgres_app_password": None}
    )
    with pytest.raises(GuardError, match="does not exist: set POSTGRES_APP_PASSWORD"):
        upgrade(ghost)


def role_settings(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT unnest(setconfig) FROM pg_db_role_setting s "
                    "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = :r"
                ),
                {"r": APP_ROLE},
            )
        )


async def show(settings: Settings, name: str) -> str:
    """A setting as the API's pooled connections have it (fresh ones: a new pool)."""
    database = Database(settings)
    try:
        return await database.write(lambda db: db.scalar(text(f"SHOW {name}")))
    finally:
        await database.dispose()


async def test_settings_the_role_gives_itself_are_overridden_noticed_and_reset(
    settings: Settings, migrated: Engine
):
    app_role = app_engine(settings)
    with app_role.begin() as conn:  # a role may alter its own settings
        # Not a tiny statement_timeout: the pin itself would then race it (docs/production.md).
        conn.exec_driver_sql("ALTER ROLE CURRENT_USER SET search_path = pg_catalog")
    try:
        assert await show(settings, "search_path") == "public"  # the app's own wins
        async with LifespanManager(create_app(settings)) as manager:
            async with asgi_client(manager.app) as client:
                assert (await client.get("/country/GB")).status_code == 200
                ready = await client.get("/ready")
                assert ready.status_code == 503, ready.text
                assert ready.json()["detail"] == (
                    f"role {APP_ROLE} has its own setting search_path=pg_catalog: "
                    "run `pipenv run migrate` to reset it"
                )
                with app_role.begin() as conn:  # for this database only, too
                    database = conn.scalar(text("SELECT current_database()"))
                    conn.exec_driver_sql(
                        f'ALTER ROLE CURRENT_USER IN DATABASE "{database}" '
                        "SET default_transaction_read_only = on"
                    )
                assert await show(settings, "transaction_read_only") == "off"

                assert "up to date" in upgrade(settings)
                assert role_settings(migrated) == []
                assert (await client.get("/ready")).status_code == 200
    finally:
        upgrade(settings)


def test_migrate_resets_a_password_the_role_set_itself(settings: Settings, migrated: Engine):
    with app_engine(settings).begin() as conn:
        conn.exec_driver_sql("ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-api'")
    try:
        with pytest.raises(OperationalError, match="password authentication failed"):
            app_engine(settings).connect()
    finally:
        upgrade(settings)
    assert pgcode(app_engine(settings), "SELECT 1") is None

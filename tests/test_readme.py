"""The README: short, names every Pipfile script and every route, and its curl examples
answer what it says they answer.

Each curl code block runs alone in a fresh `bash` (no profile, an almost empty
environment, a folder holding only a `.env`) against the real app, `python -m
devtools.start` on a throwaway embedded PostgreSQL. A `curl` function put in front of
the block records the status of every call; the sequence must equal the `# NNN`
comments of the block. The blocks run one by one, then all in README order and in
reverse: each must leave the database's data as it found it.
"""

import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from devtools.embedded_pg import free_port, throwaway
from src.config import PROJECT_ROOT, Settings
from tests.helpers import API_KEY, child_env, wait_for

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all

README = PROJECT_ROOT / "README.md"
FENCED_BLOCK = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.M | re.S)
SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
# A shell comment (a `#` at a line's start or after a blank) whose first word is a status.
STATUS_COMMENT = re.compile(r"(?:^|\s)#\s*(\d{3})\b")

# Put in front of every block: each curl call appends its final HTTP status (or "none"
# when no response came) to a file, whatever the block does with curl's output.
CURL_RECORDER = r"""
curl() {
  local headers rc
  headers=$(mktemp)
  command curl -D "$headers" "$@"
  rc=$?
  awk '/^HTTP\//{code=$2} END{print (code == "" ? "none" : code)}' "$headers" >> {statuses}
  rm -f "$headers"
  return $rc
}
"""


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


@dataclass(frozen=True)
class CurlBlock:
    line: int  # where the block starts in README.md, for messages
    source: str

    @property
    def expected(self) -> list[str]:
        statuses = []
        for line in self.source.splitlines():
            if match := STATUS_COMMENT.search(line):
                statuses.append(match.group(1))
        return statuses


def curl_blocks(readme: str) -> list[CurlBlock]:
    blocks = []
    for match in FENCED_BLOCK.finditer(readme):
        body = match.group("body")
        if match.group("lang") in SHELL_LANGS and re.search(r"\bcurl\b", body):
            blocks.append(CurlBlock(readme.count("\n", 0, match.start()) + 1, body))
    return blocks


BLOCKS = curl_blocks(readme_text())


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    database_url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app as `pipenv run start` serves it, on its own throwaway PostgreSQL."""
    log = tmp_path_factory.mktemp("readme-server") / "start.log"
    with throwaway(prefix="readme-tests-") as pg, log.open("w") as out:
        port = free_port()
        env = child_env(pg.url, API_PORT=str(port), API_HOST="127.0.0.1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.start"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            try:
                ready = wait_for(f"http://127.0.0.1:{port}/ready", proc)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()}") from None
            assert ready.status_code == 200, ready.text
            yield Server("127.0.0.1", port, pg.url)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def run_block(server: Server, tmp_path: Path):
    """Runs one block alone in a fresh bash; returns the statuses its curl calls got."""
    (tmp_path / ".env").write_text(
        f"API_HOST={server.host}\nAPI_PORT={server.port}\nAPI_KEY={API_KEY}\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LC_ALL": "C"}

    def run(block: CurlBlock) -> list[str]:
        statuses = tmp_path / "statuses"
        statuses.write_text("")
        script = tmp_path / "block.sh"
        script.write_text(CURL_RECORDER.replace("{statuses}", f"'{statuses}'") + block.source)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        where = f"README.md line {block.line}"
        assert proc.returncode == 0, f"{where}: bash exited {proc.returncode}\n{proc.stderr}"
        return statuses.read_text().split()

    return run


def database_state(url: str) -> tuple:
    """Every country as the API shows it, and how many subdivisions there are."""
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            countries = conn.execute(
                text(
                    "SELECT alpha2, alpha3, numeric, name, official_name, created_at "
                    "FROM country ORDER BY alpha2"
                )
            ).all()
            subdivisions = conn.scalar(text("SELECT count(*) FROM subdivision"))
    finally:
        engine.dispose()
    return tuple(map(tuple, countries)), subdivisions


# --- the page itself --------------------------------------------------------------------


def test_every_pipfile_script_is_in_the_readme():
    scripts = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["scripts"]
    assert scripts, "the Pipfile has no [scripts]"
    readme = readme_text()
    # `pipenv run db` must not be satisfied by `pipenv run db-stop`.
    missing = [
        name for name in scripts if not re.search(rf"pipenv run {re.escape(name)}(?![\w-])", readme)
    ]
    assert missing == [], f"README.md does not mention: pipenv run {', '.join(missing)}"


def test_every_endpoint_is_in_the_api_docs_table(base_settings: Settings):
    """docs/api.md's list, not the README's: a cloner's endpoint needs no README text."""
    from src.main import create_app

    app = create_app(base_settings)  # no lifespan: nothing connects
    api_docs = (PROJECT_ROOT / "docs" / "api.md").read_text()
    endpoints = [
        f"`{method.upper()} {path}`"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(endpoints) >= 8
    endpoints += ["`GET /docs`", "`GET /redoc`"]  # served outside the schema (src/routes/docs.py)
    missing = [endpoint for endpoint in endpoints if endpoint not in api_docs]
    assert missing == [], f"docs/api.md's endpoint table lacks {missing}"


def test_docs_links_resolve():
    links = re.findall(r"\]\(((?:docs/)[^)#\s]+)", readme_text())
    assert links, "README.md links to nothing under docs/"
    for link in links:
        assert (PROJECT_ROOT / link).is_file(), f"README.md links to {link}: no such file"


def test_curl_blocks_each_show_their_statuses():
    assert len(BLOCKS) >= 2, "README.md has no curl examples to run"
    for block in BLOCKS:
        assert block.expected, f"README.md line {block.line}: a curl block with no # NNN"
        assert block.source.lstrip().startswith("set -a; . ./.env; set +a"), (
            f"README.md line {block.line}: start the block by reading .env"
        )


# --- the curl examples, for real ----------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_curl_block_alone_gives_the_statuses_shown(block: CurlBlock, run_block, server: Server):
    before = database_state(server.database_url)
    assert run_block(block) == block.expected, f"README.md line {block.line}"
    assert database_state(server.database_url) == before, (
        f"README.md line {block.line}: the block leaves a trace in the database"
    )


@pytest.mark.parametrize("order", ["readme", "reverse"])
def test_curl_blocks_work_in_any_order_and_leave_no_trace(order: str, run_block, server: Server):
    assert len(BLOCKS) >= 2, "README.md has no curl examples to run"
    blocks = BLOCKS if order == "readme" else list(reversed(BLOCKS))
    before = database_state(server.database_url)
    assert len(before[0]) >= 249, "the ISO countries are loaded"
    for block in blocks:
        assert run_block(block) == block.expected, f"README.md line {block.line} ({order})"
    assert database_state(server.database_url) == before

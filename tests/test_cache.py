"""src/kit/cache.py: each process's response cache, flushed by PostgreSQL's NOTIFY.

Real uvicorn processes on one real database. Waits for an outcome (a process seeing a
change) have a generous deadline and assert the outcome, never a duration.
"""

import asyncio
import gc
import json
import logging
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from sqlalchemy import Engine, text

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT, Settings
from src.kit.cache import LISTENER_NAME, SMALL_SHARE
from src.logs import ACCESS_LOGGER
from src.main import create_app
from tests.helpers import (
    API_KEY,
    APP_ROLE,
    APP_ROLE_PASSWORD,
    asgi_client,
    child_env,
    config_for,
    eventually,
    fresh_engine,
    pgbouncer,
    upgrade,
    url_string,
    wait_for,
    write_revision_on_head,
)

CODE = "XC"
MIGRATED = "UPDATE country SET official_name = 'Migrated' WHERE alpha2 = 'GB'"
PATHS = ("/country/XC", "/country/xcc", "/country?q=cache%20probe", "/country/XC/subdivisions")


def cache_state(url: str) -> str | None:
    response = httpx.get(url + "/ready", timeout=5)
    return response.json().get("cache") if response.status_code == 200 else None


def app_env(settings: Settings, owner_url: str | None = None, **extra: str) -> dict[str, str]:
    """A child app on the test database, logged in as the API's role."""
    return child_env(
        owner_url or url_string(settings.sync_url),
        POSTGRES_APP_USER=APP_ROLE,
        POSTGRES_APP_PASSWORD=APP_ROLE_PASSWORD,
        **extra,
    )


@contextmanager
def serving(env: dict[str, str], count: int = 2) -> Iterator[list[str]]:
    """`count` uvicorn processes of src.main:app, each on a free port, subscribed."""
    procs: list[subprocess.Popen] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            command_line = [sys.executable, "-m", "uvicorn", "src.main:app", "--port", str(port)]
            proc = subprocess.Popen(
                [*command_line, "--no-access-log"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.DEVNULL,  # a pipe nobody reads would fill and stall it
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_for(url + "/health", proc)
            urls.append(url)
        for url in urls:
            eventually(lambda url=url: cache_state(url) == "subscribed", f"{url} subscribed")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


@pytest.fixture
def probe(db: Engine) -> Engine:
    """Country XC with one subdivision (removed afterwards by `db`)."""
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO country (alpha2, alpha3, name) VALUES ('XC', 'XCC', 'Cache probe')")
        )
        conn.execute(
            text(
                "INSERT INTO subdivision (country_id, code, name, type) "
                "SELECT id, 'XC-1', 'First', 'region' FROM country WHERE alpha2 = 'XC'"
            )
        )
    return db


@pytest.fixture
def two_apps(settings: Settings, probe: Engine) -> Iterator[list[str]]:
    with serving(app_env(settings)) as urls:
        yield urls


def official_name(url: str) -> str | None:
    response = httpx.get(url + "/country/XC", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["official_name"]


def subdivision_name(url: str) -> str:
    return httpx.get(url + "/country/XC/subdivisions", timeout=5).json()["items"][0]["name"]


def sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        if engine in SILENCED:  # triggers stay in place, and do not fire
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(statement))


SILENCED: set[Engine] = set()


@contextmanager
def triggers_disabled(engine: Engine) -> Iterator[None]:
    """Writes PostgreSQL does not announce: what a process then serves came from its
    cache. Through session_replication_role (a superuser's), not DISABLE TRIGGER: a
    cache that (re)connects meanwhile would see a disabled trigger and turn itself off."""
    SILENCED.add(engine)
    try:
        yield
    finally:
        SILENCED.discard(engine)


def warm(url: str) -> None:
    for path in PATHS:
        assert httpx.get(url + path, timeout=5).status_code == 200, path


@pytest.mark.slow
def test_reads_come_from_memory_until_postgresql_announces_a_change(two_apps, probe):
    a, _ = two_apps
    warm(a)
    with triggers_disabled(probe):
        sql(probe, "UPDATE country SET official_name = 'Unannounced' WHERE alpha2 = 'XC'")
    assert official_name(a) is None  # served from the cache: nobody told the process
    sql(probe, "UPDATE country SET name = name WHERE false")  # announced, no row changed
    eventually(lambda: official_name(a) == "Unannounced", "the flush after a NOTIFY")


@pytest.mark.slow
def test_a_write_through_one_process_is_seen_by_the_other(two_apps):
    a, b = two_apps
    warm(a)
    warm(b)
    headers = {"X-API-Key": API_KEY}
    patched = httpx.patch(
        a + "/country/XC", json={"official_name": "Written via A"}, headers=headers
    )
    assert patched.status_code == 204, patched.text
    assert official_name(a) == "Written via A"  # its own write: at once, no waiting
    eventually(lambda: official_name(b) == "Written via A", "B sees A's write")
    searched = httpx.get(b + "/country?q=cache%20probe").json()["items"]
    assert [c["official_name"] for c in searched] == ["Written via A"]
    assert httpx.get(b + "/country/xcc").json()["official_name"] == "Written via A"


@pytest.mark.slow
def test_an_update_in_sql_invalidates_both_processes(two_apps, probe):
    warm(two_apps[0])
    warm(two_apps[1])
    sql(probe, "UPDATE country SET official_name = 'From psql' WHERE alpha2 = 'XC'")
    sql(probe, "UPDATE subdivision SET name = 'Renamed' WHERE code = 'XC-1'")
    for url in two_apps:
        eventually(lambda url=url: official_name(url) == "From psql", f"{url} sees the update")
        eventually(lambda url=url: subdivision_name(url) == "Renamed", f"{url}: subdivisions")


def terminate_listeners(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": LISTENER_NAME},
        )


@pytest.mark.slow
def test_a_lost_listener_serves_nothing_stale_and_the_cache_resumes(two_apps, probe):
    a, b = two_apps
    warm(a)
    warm(b)
    assert terminate_listeners(probe) == 2
    # Unannounced, and while nobody listens: only bypassing (and flushing on the next
    # subscribe) keeps the old version from being served.
    with triggers_disabled(probe):
        sql(probe, "UPDATE country SET official_name = 'While deaf' WHERE alpha2 = 'XC'")
        assert official_name(a) == "While deaf"
        for url in two_apps:
            eventually(lambda url=url: cache_state(url) == "subscribed", "subscribed again")
        assert official_name(b) == "While deaf"
        warm(a)  # cached again, then changed unannounced: the cache is back in use
        sql(probe, "UPDATE country SET official_name = 'Later' WHERE alpha2 = 'XC'")
        assert official_name(a) == "While deaf"
    sql(probe, "UPDATE country SET name = name WHERE false")
    eventually(lambda: official_name(a) == "Later", "the flush after a NOTIFY")


async def race(url: str, writes: int, readers: int) -> list[str]:
    """One writer sets versions 1..writes in turn while `readers` clients read; returns
    every read that saw a version older than one whose write had already completed."""
    completed = 0  # the last version whose PATCH had answered
    done = False
    stale: list[str] = []

    def version(body: dict) -> int:
        return int((body.get("official_name") or "v0").removeprefix("v"))

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def writer() -> None:
            nonlocal completed, done
            for n in range(1, writes + 1):
                response = await client.patch(
                    "/country/XC", json={"official_name": f"v{n}"}, headers={"X-API-Key": API_KEY}
                )
                assert response.status_code == 204, response.text
                completed = n
            done = True

        async def reader(path: str) -> None:
            while not done:
                floor = completed
                response = await client.get(path)
                assert response.status_code == 200, response.text
                body = response.json()
                seen = version(body["items"][0] if "items" in body else body)
                if seen < floor:
                    stale.append(f"{path} gave v{seen} after v{floor} was written")

        paths = ("/country/XC", "/country?q=cache%20probe")
        await asyncio.gather(writer(), *(reader(paths[i % 2]) for i in range(readers)))
    return stale


@pytest.mark.slow
def test_no_read_is_older_than_a_write_completed_before_it_began(settings, probe):
    """Same process: a read that raced a write never stores the old version, and the
    writer flushes before it answers. With the trigger off, no NOTIFY helps: over loopback
    it would otherwise often arrive before the client's next request and hide a bug."""
    with serving(app_env(settings), count=1) as (url,), triggers_disabled(probe):
        assert asyncio.run(race(url, writes=60, readers=6)) == []
        assert official_name(url) == "v60"


@pytest.mark.slow
def test_a_data_migration_invalidates(
    settings: Settings, sync_engine: Engine, scratch_alembic: Path
):
    write_revision_on_head(
        scratch_alembic / "versions",
        "da7a0ca4e001",
        "def upgrade() -> None:\n"
        f"    op.execute({MIGRATED!r})\n\n\n"
        "def downgrade() -> None:\n    pass\n",
    )
    with fresh_engine(sync_engine) as (url, engine):
        database_settings = settings.for_database(url)
        upgrade(database_settings)
        with serving(app_env(settings, url_string(url)), count=2) as urls:
            for app in urls:
                assert httpx.get(app + "/country/GB").json()["official_name"] != "Migrated"
            command.upgrade(config_for(database_settings, engine, scratch_alembic), "head")
            for app in urls:
                eventually(
                    lambda app=app: (
                        httpx.get(app + "/country/GB").json()["official_name"] == "Migrated"
                    ),
                    f"{app} sees the data migration",
                )


# --- hits, answered before FastAPI's routing ------------------------------------------

UNANNOUNCED = (
    "UPDATE country SET official_name = 'Unannounced' WHERE alpha2 = 'XC'",
    "UPDATE subdivision SET name = 'Unannounced' WHERE code = 'XC-1'",
)
REQUEST_ONLY = {"x-request-id", "date"}


def answer(response: httpx.Response) -> tuple:
    """What a client sees of a response, but what differs per request."""
    headers = sorted((k, v) for k, v in response.headers.items() if k not in REQUEST_ONLY)
    return response.status_code, headers, response.content


@pytest.mark.parametrize(
    "path", [*PATHS, "/country?q=cache+probe&limit=5", "/country?limit=1&offset=2"]
)
@pytest.mark.parametrize("variant", ["GET", "If-None-Match", "HEAD"])
async def test_a_hit_is_answered_as_the_route_answered_it(settings, probe, path, variant):
    """The first request reaches the route, which keeps the response; the second, after
    an unannounced change, is the kept one: the same status, headers and bytes."""
    app = create_app(settings)
    async with LifespanManager(app) as manager, asgi_client(manager.app) as anon:
        assert await settled(anon) == "subscribed"
        etag = (await anon.get(path)).headers["etag"]
        app.state.cache.invalidate()
        method = "HEAD" if variant == "HEAD" else "GET"
        headers = {"If-None-Match": f'W/"other", {etag}'} if variant == "If-None-Match" else {}
        first = await anon.request(method, path, headers=headers)
        with triggers_disabled(probe):
            for statement in UNANNOUNCED:
                sql(probe, statement)
        second = await anon.request(method, path, headers=headers)
    assert first.status_code == (304 if variant == "If-None-Match" else 200)
    assert answer(second) == answer(first)
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert second.headers["x-content-type-options"] == "nosniff"


async def test_a_hit_is_kept_only_for_the_exact_path_and_query(anon, probe):
    """Routing and validation are skipped only for a request the route already answered:
    the same bytes after decoding (path and query), not the same country."""
    assert await settled(anon) == "subscribed"
    assert (await anon.get("/country/FI")).status_code == 200
    assert (await anon.get("/country/XC")).status_code == 200
    with triggers_disabled(probe):
        sql(probe, UNANNOUNCED[0])
        # "ﬁ" (a ligature) upper-cases to "FI": not a code, whatever is cached.
        assert (await anon.get("/country/%EF%AC%81")).status_code == 422
        assert (await anon.get("/country/XC/")).status_code == 404
        assert (await anon.get("/country/XC", params={"limit": "0"})).status_code == 422
        assert (await anon.get("/country/xc")).json()["official_name"] == "Unannounced"
        assert (await anon.get("/country/X%43")).json()["official_name"] is None  # /country/XC
    assert (await anon.get("/country?limit=0")).status_code == 422


async def test_a_hit_writes_the_access_line_of_its_route(anon, probe, log_lines):
    lines = log_lines("json")
    assert await settled(anon) == "subscribed"
    for _ in range(2):
        assert (await anon.get("/country/XC", headers={"X-Request-ID": "hit-1"})).status_code == 200
    parsed = [json.loads(line) for line in lines() if line.startswith("{")]
    access = [line for line in parsed if line.get("logger") == ACCESS_LOGGER]
    assert [(a["route"], a["status"], a["request_id"]) for a in access[-2:]] == [
        ("/country/{code}", 200, "hit-1")
    ] * 2


async def test_the_cache_holds_no_more_memory_than_cache_max_mb(settings, probe):
    """Each kept response counts what it really holds (was: its body's length only, while
    orjson's bytes kept a 4 KiB buffer each: ~25x CACHE_MAX_MB for small bodies): what a
    flush frees is at most what was counted, small bodies and large ones alike. Small
    objects (pymalloc keeps their arenas) get at most SMALL_SHARE of the budget."""
    app = create_app(settings.model_copy(update={"cache_max_mb": 1}))
    async with LifespanManager(app) as manager, asgi_client(manager.app) as anon:
        assert await settled(anon) == "subscribed"
        cache = app.state.cache
        small = [f"/country?q=cache+probe&offset={n}" for n in reversed(range(3000))]
        large = [f"/country?limit={n}&offset={n % 7}" for n in range(100, 250)]
        for paths in (small, large):
            for path in paths[:50]:  # what the first requests allocate once, not kept bodies
                assert (await anon.get(path)).status_code == 200
            cache.invalidate()
            gc.collect()
            tracemalloc.start()
            try:
                for path in paths:  # distinct keys: ~150-byte bodies, then 15-40 KB ones
                    assert (await anon.get(path)).status_code == 200
                gc.collect()
                full = tracemalloc.get_traced_memory()[0]
                kept_entries, held, held_small = (
                    len(cache),
                    cache.held_bytes,
                    cache.held_small_bytes,
                )
                if paths is small:
                    with triggers_disabled(probe):
                        sql(probe, UNANNOUNCED[0])
                        kept = await anon.get(small[-1])
                    # the newest entries were kept
                    assert kept.json()["items"][0]["official_name"] is None
                cache.invalidate()
                gc.collect()
                freed = full - tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            assert 0 < kept_entries < len(paths), "the flood did not fill the cache"
            assert 0 < held <= 1024 * 1024 and held_small <= SMALL_SHARE * 1024 * 1024
            # What the entries held (freed by the flush, keys and dict included) was counted.
            assert freed <= held, f"{freed:,} bytes freed, {held:,} counted for {kept_entries}"
            assert freed >= 0.7 * held, f"{freed:,} bytes freed, {held:,} counted: too coarse"


async def test_an_unknown_query_parameter_is_refused_and_kept_nowhere(settings, probe):
    """Ignored, each random parameter would be a new key: a flood evicts the real ones."""
    app = create_app(settings)
    async with LifespanManager(app) as manager, asgi_client(manager.app) as anon:
        assert await settled(anon) == "subscribed"
        assert (await anon.get("/country/XC")).status_code == 200
        cache = app.state.cache
        held = len(cache), cache.held_bytes
        for path, unknown in [
            ("/country/XC?x=1", ["query.x"]),
            ("/country?limit=250&x=a1&Limit=3", ["query.Limit", "query.x"]),
            ("/country/XC/subdivisions?q=First&y=", ["query.y"]),
        ]:
            response = await anon.get(path)
            assert response.status_code == 422, (path, response.text)
            body = response.json()
            assert body["code"] == "validation_error"
            assert [e["field"] for e in body["errors"]] == unknown
            assert "unknown query parameter" in body["errors"][0]["message"]
        assert (len(cache), cache.held_bytes) == held
        assert (await anon.get("/country?limit=5&q=cache+probe")).status_code == 200  # known: kept
        assert len(cache) == held[0] + 1


async def test_a_hit_keeps_its_entry_from_eviction(settings, probe):
    """Least recently used goes first: a key read all along outlives the flood around it
    (evicted, it would be read again and show the change nobody announced)."""
    app = create_app(settings.model_copy(update={"cache_max_mb": 1}))
    async with LifespanManager(app) as manager, asgi_client(manager.app) as anon:
        assert await settled(anon) == "subscribed"
        assert (await anon.get("/country/XC")).status_code == 200  # read all along
        assert (await anon.get("/country/xcc")).status_code == 200  # read once
        with triggers_disabled(probe):
            sql(probe, UNANNOUNCED[0])
        for n in range(2000):  # ~3 MB of entries through a 1 MiB cache
            assert (await anon.get(f"/country?q=cache+probe&offset={n}")).status_code == 200
            if n % 50 == 0:
                assert (await anon.get("/country/XC")).json()["official_name"] is None
        assert len(app.state.cache) < 2000  # it did evict
        assert (await anon.get("/country/XC")).json()["official_name"] is None  # kept
        assert (await anon.get("/country/xcc")).json()["official_name"] == "Unannounced"


# --- the cache off ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_route_tests_pass_with_the_cache_off(database_url: str, migrated):
    """tests/routes, as they ran before the cache, on this database with CACHE_ENABLED=false."""
    env = child_env(CACHE_ENABLED="false", TEST_DATABASE_URL=database_url)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/routes", "-q", "-x", "-p", "no:cacheprovider"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout, proc.stdout[-3000:]


async def settled(client: httpx.AsyncClient) -> str:
    """The in-process app's cache state once its listener settled (subscribed or off)."""
    for _ in range(500):
        state = (await client.get("/ready")).json()["cache"]
        if state != "not subscribed":
            return state
        await asyncio.sleep(0.02)
    return state


@pytest.mark.parametrize("app", [{"cache_enabled": False}], indirect=True)
async def test_with_the_cache_off_every_read_goes_to_the_database(anon, probe):
    assert await settled(anon) == "off"
    assert (await anon.get("/country/XC")).json()["official_name"] is None
    with triggers_disabled(probe):
        sql(probe, "UPDATE country SET official_name = 'Unannounced' WHERE alpha2 = 'XC'")
    assert (await anon.get("/country/XC")).json()["official_name"] == "Unannounced"


async def test_behind_a_transaction_pooler_without_a_listen_url_the_cache_is_off(
    settings: Settings, db, caplog
):
    given = settings.model_copy(update={"db_transaction_pooler": True})
    with caplog.at_level(logging.WARNING, logger="src.kit.cache"):
        async with served(given) as client:
            assert await settled(client) == "off"
            assert (await client.get("/country/GB")).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "response cache off" in r.getMessage()]
    assert "DB_TRANSACTION_POOLER=true" in line and "CACHE_LISTEN_DATABASE_URL" in line


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process on `settings`, and a client to it."""
    async with LifespanManager(create_app(settings)) as manager, asgi_client(manager.app) as client:
        yield client


@pytest.fixture
def listen_url(settings: Settings) -> str:
    """The API role straight to PostgreSQL, as CACHE_LISTEN_DATABASE_URL."""
    return url_string(settings.app_async_url.set(drivername="postgresql"))


async def test_a_listen_url_keeps_the_cache_behind_a_transaction_pooler(settings, listen_url, db):
    given = settings.model_copy(
        update={"db_transaction_pooler": True, "cache_listen_database_url": listen_url}
    )
    async with served(given) as client:
        assert await settled(client) == "subscribed"


@pytest.mark.slow
async def test_a_listener_through_pgbouncer_turns_the_cache_off_saying_why(
    settings: Settings, db, caplog
):
    server = settings.sync_url
    with pgbouncer(server, {APP_ROLE: APP_ROLE_PASSWORD}, pool_mode="transaction") as port:
        through = f"postgresql://{APP_ROLE}:{APP_ROLE_PASSWORD}@127.0.0.1:{port}/{server.database}"
        given = settings.model_copy(
            update={"db_transaction_pooler": True, "cache_listen_database_url": through}
        )
        with caplog.at_level(logging.ERROR, logger="src.kit.cache"):
            async with served(given) as client:
                assert await settled(client) == "off"
    (line,) = [r.getMessage() for r in caplog.records if "response cache off" in r.getMessage()]
    assert "connection pooler" in line and "CACHE_LISTEN_DATABASE_URL" in line


MiB = 1024 * 1024


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def flood(url: str, paths: list[str]) -> None:
    """GET every path, 8 at a time on keep-alive connections: all 200."""

    async def run() -> None:
        queue = iter(paths)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker() -> None:
                for path in queue:
                    response = await client.get(path)
                    assert response.status_code == 200, (path, response.status_code)

            await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(run())


@pytest.mark.slow
def test_a_real_server_grows_by_at_most_1_25x_cache_max_mb(settings, migrated):
    """`python -m src.serve` with CACHE_MAX_MB=32, then the same requests with the cache off:
    large pages, then ~6,000 small entries, then new large pages (the mix that leaves the
    most memory behind: CPython's small-object allocator keeps what they freed). The
    cache's own RSS growth (beside the cache-off server's) stays within 1.25x CACHE_MAX_MB
    (before: small entries could take the whole budget, and both kinds of memory added up:
    1.33x here; now they get SMALL_SHARE of it)."""
    with migrated.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.alpha2, c.alpha3, count(s.id) FROM country c "
                "LEFT JOIN subdivision s ON s.country_id = c.id GROUP BY 1, 2 ORDER BY 1"
            )
        ).all()
    pages = [(limit, offset) for offset in range(0, 150, 3) for limit in range(100, 251, 3)]
    large = [f"/country?limit={n}&offset={o}" for n, o in pages]  # 15-40 KB bodies
    small = [  # bodies under 512 bytes: one subdivision a page, each country by its codes
        f"/country/{a2}/subdivisions?limit=1&offset={n}"
        for a2, _, count in rows
        for n in range(count)
    ] + [f"/country/{code}" for a2, a3, _ in rows for code in (a2, a2.lower(), a3, a3.lower())]
    growth = {}
    for enabled in ("true", "false"):
        env = app_env(settings, CACHE_ENABLED=enabled, CACHE_MAX_MB="32", LOG_LEVEL="WARNING")
        with serving_one(env) as (url, pid):
            flood(url, [large[0], small[0]])  # what the first requests allocate once
            started = rss_of(pid)
            for paths in (large[: len(large) // 2], small, large[len(large) // 2 :]):
                flood(url, paths)
            growth[enabled] = rss_of(pid) - started
    own = growth["true"] - growth["false"]
    assert own <= 1.25 * 32 * MiB, (
        f"the cache grew RSS by {own / MiB:.1f} MiB beside the cache-off server "
        f"({growth['true'] / MiB:.1f} against {growth['false'] / MiB:.1f} MiB)"
    )


@contextmanager
def serving_one(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`python -m src.serve` on a free port, its cache settled: its URL and process ID."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.serve"],
        cwd=PROJECT_ROOT,
        env={**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)},
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would fill and stall it
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/health", proc)
        eventually(lambda: cache_state(url) in ("subscribed", "off"), f"{url} settled")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)

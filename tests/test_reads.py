"""src/reads.py: Core statements compiled once and run on the pooled asyncpg connection by
`Database.read`: values rendered into the SQL round-trip exactly (and stay values), rows
come back as SQLAlchemy would give them, a cancelled read leaves nothing behind, and a
transaction pooler's reads run in one transaction."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sqlalchemy import (
    ARRAY,
    Engine,
    Integer,
    String,
    TextClause,
    any_,
    bindparam,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from src.config import Settings
from src.db import Database
from src.models import Country, CountrySource
from src.reads import Reads, compiled, rendered
from tests.helpers import APP_ROLE, idle_in_transaction

ODD = "O'Brien \\ 100% a_b/c Åland ß"
INJECTION = "x' OR '1'='1"


@pytest.fixture
async def database(settings: Settings, migrated) -> AsyncIterator[Database]:
    database = Database(settings)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def one_connection(settings: Settings, migrated) -> AsyncIterator[Database]:
    """A pool of one connection: what a read leaves on it, the next read gets."""
    database = Database(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    try:
        yield database
    finally:
        await database.dispose()


async def read_one(database: Database, stmt, params: dict[str, Any]) -> dict[str, Any] | None:
    return await database.read(lambda reads: reads.one(stmt, params))


# --- rendered values -----------------------------------------------------------------

RENDERED_STR = select(rendered("v").label("v"))
RENDERED_INT = select(rendered("n", Integer).label("n"), (rendered("n", Integer) + 1).label("m"))
RENDERED_WHERE = select(literal(1).label("one")).where(literal("abc") == rendered("v"))


@pytest.mark.parametrize(
    "value", [ODD, INJECTION, "'", "\\", "\\'", "%", "_", "/", "", "ünïcødé 日本 🌍", "$1"]
)
async def test_a_rendered_str_round_trips_exactly(database: Database, value: str):
    assert await read_one(database, RENDERED_STR, {"v": value}) == {"v": value}


async def test_a_rendered_injection_attempt_is_only_a_value(database: Database):
    """Quoted, `x' OR '1'='1` compares as one string: no row, where unquoted it would match."""
    assert await read_one(database, RENDERED_WHERE, {"v": "abc"}) == {"one": 1}
    assert await read_one(database, RENDERED_WHERE, {"v": INJECTION}) is None
    assert await read_one(database, RENDERED_WHERE, {"v": "abc' OR '1'='1"}) is None


@pytest.mark.parametrize("value", [0, 42, -7, 2**40])
async def test_a_rendered_int_round_trips(database: Database, value: int):
    assert await read_one(database, RENDERED_INT, {"n": value}) == {"n": value, "m": value + 1}


@pytest.mark.parametrize(
    ("stmt", "value", "kind"),
    [
        (RENDERED_STR, 1.5, "float"),
        (RENDERED_STR, True, "bool"),
        (RENDERED_INT, False, "bool"),
        (RENDERED_INT, 2.0, "float"),
        (RENDERED_STR, b"x", "bytes"),
        (RENDERED_STR, None, "NoneType"),
    ],
)
async def test_a_rendered_value_of_another_type_is_a_type_error_naming_it(
    database: Database, stmt, value: object, kind: str
):
    name = "v" if stmt is RENDERED_STR else "n"
    with pytest.raises(TypeError, match=rf"rendered '{name}' takes a str or an int, not {kind}"):
        await read_one(database, stmt, {name: value})
    assert await database.read(lambda reads: reads.scalar(text("SELECT 1"))) == 1


# --- compiling -----------------------------------------------------------------------


def test_a_statement_object_compiles_once():
    dialect = PGDialect_asyncpg()
    stmt = select(bindparam("x", type_=Integer).label("x"))
    first = compiled(stmt, dialect)
    assert compiled(stmt, dialect) is first
    # An equal statement built again is another object: compiled again (built at import).
    assert compiled(select(bindparam("x", type_=Integer).label("x")), dialect) is not first
    assert first.sql == "SELECT $1::INTEGER AS x" and first.names == ("x",)


async def test_the_cache_is_used_by_reads(database: Database):
    stmt = select(bindparam("x", type_=Integer).label("x"))
    assert await read_one(database, stmt, {"x": 3}) == {"x": 3}
    hits = compiled.cache_info().hits
    assert await read_one(database, stmt, {"x": 4}) == {"x": 4}
    assert compiled.cache_info().hits == hits + 1


async def test_a_missing_parameter_is_a_type_error_naming_it(database: Database):
    stmt = select(bindparam("wanted", type_=Integer).label("x"))
    with pytest.raises(TypeError, match="no value for the statement's parameter 'wanted'"):
        await read_one(database, stmt, {})
    with pytest.raises(TypeError, match="no value for the statement's parameter 'v'"):
        await read_one(database, RENDERED_STR, {})
    assert await database.read(lambda reads: reads.scalar(text("SELECT 1"))) == 1


async def test_a_parameter_the_statement_lacks_is_refused_not_dropped(database: Database):
    """A value the statement would not use (a new column missing from an INSERT's bound
    columns, say) is refused, naming it, rather than silently lost."""
    stmt = select(bindparam("wanted", type_=Integer).label("x"))
    with pytest.raises(TypeError, match="the statement has no parameter other"):
        await read_one(database, stmt, {"wanted": 1, "other": 2})
    assert await read_one(database, stmt, {"wanted": 1}) == {"x": 1}


async def test_a_value_given_at_build_time_is_the_default(database: Database):
    stmt = select(bindparam("x", 5, type_=Integer).label("x"), literal("built").label("s"))
    assert await read_one(database, stmt, {}) == {"x": 5, "s": "built"}
    assert await read_one(database, stmt, {"x": 6}) == {"x": 6, "s": "built"}


async def test_a_build_time_default_of_a_processed_type_is_used(database: Database):
    stmt = select(Country.alpha2).where(Country.source == CountrySource.ISO, Country.alpha2 == "GB")
    assert await read_one(database, stmt, {}) == {"alpha2": "GB"}


@pytest.mark.parametrize(
    ("where", "name"),
    [
        (Country.alpha2.in_(bindparam("codes", expanding=True)), "'codes'"),
        (Country.alpha2.in_(["FR", "GB"]), "alpha2"),
        (Country.alpha2 == bindparam("code", "FR", literal_execute=True), "'code'"),
    ],
    ids=["expanding", "in-list", "literal_execute"],
)
async def test_a_parameter_sqlalchemy_renders_per_execution_is_refused(
    database: Database, where, name: str
):
    """SQLAlchemy renders these into the SQL at each execution; the driver would get its
    placeholder (`__[POSTCOMPILE_...]`). Refused when compiled, naming the way that works."""
    stmt = select(Country.alpha2).where(where)
    message = rf"parameter .*{name}.*: an IN list or a literal_execute parameter is not run here"
    with pytest.raises(TypeError, match=message):
        await database.read(lambda reads: reads.all(stmt, {"codes": ["FR"]}))
    with pytest.raises(TypeError, match="ARRAY"):
        compiled(stmt, database.autocommit.dialect)


async def test_an_array_bound_once_is_the_way_to_an_in_list(database: Database):
    stmt = (
        select(Country.alpha2)
        .where(Country.alpha2 == any_(bindparam("codes", type_=ARRAY(String))))
        .order_by(Country.alpha2)
    )
    rows = await database.read(lambda reads: reads.all(stmt, {"codes": ["GB", "FR", "ZZ"]}))
    assert rows == [{"alpha2": "FR"}, {"alpha2": "GB"}]


# --- rows ----------------------------------------------------------------------------


BY_CODE = select(Country.__table__).where(Country.alpha2 == bindparam("code"))


async def test_rows_are_keyed_by_label_and_converted_as_sqlalchemy_does(
    database: Database, migrated: Engine
):
    stmt = select(
        Country.alpha2.label("code"),
        Country.name,
        Country.source,
        Country.created_at.label("made"),
        func.lower(Country.name).label("lower_name"),
    ).where(Country.alpha2 == bindparam("code"))
    row = await read_one(database, stmt, {"code": "GB"})
    assert row is not None
    assert list(row) == ["code", "name", "source", "made", "lower_name"]
    assert type(row["source"]) is CountrySource and row["source"] is CountrySource.ISO
    with migrated.connect() as conn:
        expected = dict(conn.execute(stmt, {"code": "GB"}).one()._mapping)
        every_column = dict(conn.execute(BY_CODE, {"code": "FR"}).one()._mapping)
    assert row == expected
    assert await read_one(database, BY_CODE, {"code": "FR"}) == every_column
    assert list(every_column) == [c.key for c in Country.__table__.c]


async def test_all_one_and_scalar(database: Database):
    stmt = select(Country.alpha2, Country.source).where(
        or_(Country.alpha2 == "FR", Country.alpha2 == bindparam("other"))
    )

    async def work(reads: Reads) -> tuple:
        ordered = stmt.order_by(Country.alpha2)
        return (
            await reads.all(ordered, {"other": "GB"}),
            await reads.one(ordered.where(Country.alpha2 == "ZZ"), {"other": "ZZ"}),
            await reads.scalar(select(Country.source).where(Country.alpha2 == "GB")),
            await reads.scalar(select(Country.source).where(Country.alpha2 == "ZZ")),
        )

    rows, none, source, no_source = await database.read(work)
    assert rows == [
        {"alpha2": "FR", "source": CountrySource.ISO},
        {"alpha2": "GB", "source": CountrySource.ISO},
    ]
    assert (none, source, no_source) == (None, CountrySource.ISO, None)


# --- through the API -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "matches"),
    [
        ("'", ["QM", "QN"]),
        ("o'b", ["QM"]),
        ("%", ["QN", "QO"]),
        ("100%", ["QN"]),
        ("_", ["QO", "QP"]),
        ("x_y", ["QO"]),
        ("\\", ["QP", "QQ"]),
        ("a\\b", ["QQ"]),
        ("/", ["QR"]),
        ("' OR '1'='1", []),
        ("ÅLAND Ö", ["QS"]),
    ],
)
async def test_a_search_with_quote_and_wildcards_matches_them_literally(
    client, db, q: str, matches: list[str]
):
    names = {
        "QM": "Qm O'Brien",
        "QN": "Qn 100% Pure'",
        "QO": "Qo x_y 5%",
        "QP": "Qp a_\\",
        "QQ": "Qq a\\b",
        "QR": "Qr a/b",
        "QS": "Qs Åland Ö",
        "QT": "Qt Oxbrien axb ab xy 100",  # would match `_` or `%` as wildcards
    }
    for code, name in names.items():
        body = {"alpha2": code, "alpha3": code + "X", "name": name}
        response = await client.post("/country", json=body)
        assert response.status_code == 201, response.text
    response = await client.get("/country", params={"q": q, "limit": 250})
    assert response.status_code == 200, response.text
    page = response.json()
    found = [item["alpha2"] for item in page["items"] if item["alpha2"] in names]
    assert found == matches
    for item in page["items"]:
        assert q.lower() in item["name"].lower(), item
    assert page["total"] == len(page["items"])


# --- cancellation --------------------------------------------------------------------


def sleep_statement() -> TextClause:
    """pg_sleep(5), its text this test's own: pg_stat_activity tells it from others'."""
    return text(f"SELECT pg_sleep(5) AS slept, '{uuid.uuid4().hex}' AS tag")


def running(migrated: Engine, stmt: TextClause) -> int:
    """Backends running `stmt`, as the server sees them."""
    with migrated.connect() as conn:
        return conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE query = :sql AND state = 'active'"),
            {"sql": stmt.text},
        )


def idle_app_transactions(migrated: Engine) -> int:
    """The API role's connections left inside a transaction."""
    with migrated.connect() as conn:
        return idle_in_transaction(conn, APP_ROLE)


async def cancelled_read(database: Database, migrated: Engine, how: str) -> TextClause:
    """A read of pg_sleep(5) cancelled after 0.2 s: once by task.cancel(), or by an anyio
    deadline (Starlette's own cancel scopes), which cancels again at each await until the
    read has ended, the driver's ROLLBACK included. The statement it ran."""
    stmt = sleep_statement()
    if how == "task.cancel":
        task = asyncio.create_task(database.read(lambda reads: reads.scalar(stmt)))
        await asyncio.sleep(0.2)
        assert running(migrated, stmt) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with anyio.move_on_after(0.2) as scope:
            await database.read(lambda reads: reads.scalar(stmt))
        assert scope.cancelled_caught
    return stmt


@pytest.mark.parametrize("how", ["task.cancel", "anyio.move_on_after"])
@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "DB_TRANSACTION_POOLER"])
async def test_a_cancelled_read_leaves_its_pool_usable(
    settings: Settings, migrated: Engine, pooler: bool, how: str
):
    """A request cancelled mid-statement (a deadline, shutdown): the next read on the
    one-connection pool answers at once and rightly, and no connection is left inside a
    transaction (behind a pooler an anyio deadline interrupts the driver's ROLLBACK: the
    connection, still in the read's transaction, must not serve again)."""
    update = {"db_pool_size": 1, "db_max_overflow": 0, "db_transaction_pooler": pooler}
    database = Database(settings.model_copy(update=update))
    try:
        await cancelled_read(database, migrated, how)
        started = time.monotonic()
        async with asyncio.timeout(2):
            seven = await database.read(lambda reads: reads.scalar(select(literal(7))))
        assert seven == 7
        assert time.monotonic() - started < 1
        assert await database.read(same_transaction) is pooler
        assert idle_app_transactions(migrated) == 0
    finally:
        await database.dispose()


async def test_a_cancelled_statement_stops_on_the_server(
    one_connection: Database, migrated: Engine
):
    """The connection is kept, so asyncpg's cancel reaches the server (invalidated, the
    connection was terminated before it was sent: the statement ran on, holding a backend,
    to its end or statement_timeout)."""
    stmt = await cancelled_read(one_connection, migrated, "task.cancel")
    assert await one_connection.read(lambda reads: reads.scalar(select(literal(7)))) == 7
    for _ in range(40):  # 2 s: the event loop runs on meanwhile (the driver's cancel)
        if not (busy := running(migrated, stmt)):
            break
        await asyncio.sleep(0.05)
    assert busy == 0, "the cancelled pg_sleep(5) still runs on the server"


@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "DB_TRANSACTION_POOLER"])
async def test_a_read_cancelled_at_any_point_leaves_its_pool_usable(
    settings: Settings, migrated: Engine, pooler: bool
):
    """Cancelled after 0, 1, 2... turns of the event loop (checkout, BEGIN, the statement,
    the commit), or by anyio deadlines 0.1 ms apart: every next read answers rightly and no
    connection is left inside a transaction."""
    update = {"db_pool_size": 1, "db_max_overflow": 0, "db_transaction_pooler": pooler}
    database = Database(settings.model_copy(update=update))
    short = text("SELECT pg_sleep(0.005)")
    wrong = []
    try:
        for step in range(30):
            task = asyncio.create_task(database.read(lambda reads: reads.scalar(short)))
            for _ in range(step):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with anyio.move_on_after(step / 10_000):
                await database.read(lambda reads: reads.scalar(short))
            async with asyncio.timeout(5):
                if await database.read(same_transaction) is not pooler:
                    wrong.append(step)
        assert wrong == []
        assert idle_app_transactions(migrated) == 0
    finally:
        await database.dispose()


# --- behind a transaction pooler -----------------------------------------------------


async def same_transaction(reads: Reads) -> bool:
    """now() is the transaction's start: equal across statements only inside one."""
    first = await reads.scalar(text("SELECT now()"))
    await reads.scalar(text("SELECT pg_sleep(0.02)"))
    return first == await reads.scalar(text("SELECT now()"))


async def test_reads_run_in_a_read_only_transaction_only_behind_a_pooler(
    settings: Settings, migrated
):
    pooler = Database(settings.model_copy(update={"db_transaction_pooler": True}))
    direct = Database(settings)
    try:
        assert await pooler.read(same_transaction) is True
        assert await direct.read(same_transaction) is False
        show = text("SELECT current_setting('transaction_read_only')")
        assert await pooler.read(lambda reads: reads.scalar(show)) == "on"
        assert await direct.read(lambda reads: reads.scalar(show)) == "off"
    finally:
        await pooler.dispose()
        await direct.dispose()

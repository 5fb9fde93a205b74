"""The write ceiling: `POST /country`, `PATCH` and `DELETE /country/{code}` on Starlette and
asyncpg, with the app's statements in the app's transaction shape, so the ratio of the
app's writes to these is what its layers cost a write.

Each write is one READ COMMITTED transaction (`BEGIN ISOLATION LEVEL READ COMMITTED`, as the
app's), holding: POST an INSERT ... RETURNING the row; PATCH and DELETE, with If-Match or
If-None-Match, the country read FOR UPDATE and its ETag judged, then the UPDATE ...
RETURNING alpha2 or DELETE ... RETURNING id. The same X-API-Key check (constant time), the
same JSON in (parsed; types, patterns and lengths checked, not the app's per-character
Unicode rules or duplicate keys) and out (the 201's row and ETag, Location, the error
bodies), and the headers the app adds (nosniff, X-Request-ID taken or made).
Served by bench/ceiling_app.py, which configures it.
"""

import re
import secrets
import uuid
from collections.abc import Callable

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.ceiling_app import COLUMNS, JSON, etag_for

# In the column order of the app's INSERT (CountryCreate's fields).
FIELDS = ("alpha2", "alpha3", "name", "numeric", "official_name")
REQUIRED = frozenset({"alpha2", "alpha3", "name"})
NULLABLE = frozenset({"numeric", "official_name"})
INSERT = (
    f"INSERT INTO country ({', '.join(FIELDS)}) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
)
KEY = {2: "alpha2", 3: "alpha3"}
LOCKED = {n: f"SELECT {COLUMNS} FROM country WHERE {k} = $1 FOR UPDATE" for n, k in KEY.items()}
DELETE = {n: f"DELETE FROM country WHERE {k} = $1 RETURNING id" for n, k in KEY.items()}
UNIQUE_FIELDS = {"country_alpha2_key": "alpha2", "country_alpha3_key": "alpha3"}
CODE = re.compile(r"[A-Za-z]{2,3}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def _name(value: str) -> bool:
    return 1 <= len(value) <= 200 and value.isprintable() and any(c.isalnum() for c in value)


CHECKS: dict[str, Callable[[str], bool]] = {
    "alpha2": lambda v: len(v) == 2 and v.isascii() and v.isalpha(),
    "alpha3": lambda v: len(v) == 3 and v.isascii() and v.isalpha(),
    "numeric": lambda v: len(v) == 3 and v.isascii() and v.isdigit(),
    "name": _name,
    "official_name": _name,
}


class Refused(Exception):
    """An answer other than the write's own, raised inside the transaction to roll it back."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def values_of(body: object, *, create: bool) -> dict[str, str | None]:
    """The fields to write, trimmed and codes upper-cased, in the INSERT's order; a POST's
    left-out optional fields are null, a PATCH's left out. Refused (422) if malformed."""
    if not isinstance(body, dict) or not body or not body.keys() <= CHECKS.keys():
        raise Refused(422, "request validation failed")
    if create and not REQUIRED <= body.keys():
        raise Refused(422, "request validation failed")
    values: dict[str, str | None] = {}
    for field in FIELDS:
        if field not in body:
            if create:
                values[field] = None
            continue
        value = body[field]
        if value is None and field in NULLABLE:
            values[field] = None
            continue
        if not isinstance(value, str) or not CHECKS[field](value := value.strip()):
            raise Refused(422, "request validation failed")
        values[field] = value.upper() if field in KEY.values() else value
    return values


def _answer(
    request: Request, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> Response:
    given = request.headers.get("x-request-id", "")
    rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    all_headers = {**(headers or {}), **NOSNIFF, "X-Request-ID": rid}
    return Response(body, status, all_headers, media_type=JSON if body else None)


def _error(request: Request, refused: Refused) -> Response:
    codes = {401: "unauthorized", 404: "not_found", 409: "conflict", 412: "precondition_failed"}
    code = codes.get(refused.status, "validation_error")
    headers = {"WWW-Authenticate": "ApiKey"} if refused.status == 401 else None
    body = orjson.dumps({"detail": refused.detail, "code": code})
    return _answer(request, refused.status, body, headers)


def _check_key(request: Request) -> None:
    expected: str | None = request.app.state.api_key
    given = request.headers.get("x-api-key")
    if expected is None:
        raise Refused(401, "writes are disabled: no API_KEY")
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise Refused(401, "missing or wrong X-API-Key header")


async def _body(request: Request, *, create: bool) -> dict[str, str | None]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise Refused(415, "request body must be JSON (Content-Type: application/json)")
    _check_key(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise Refused(422, "request validation failed") from None
    return values_of(body, create=create)


def _code(request: Request) -> str:
    code = request.path_params["code"]
    if not CODE.fullmatch(code):
        raise Refused(422, "request validation failed")
    return code.upper()


def _conflict(exc: asyncpg.UniqueViolationError, values: dict[str, str | None]) -> Refused:
    field = UNIQUE_FIELDS.get(exc.constraint_name or "")
    taken = f"{field} {values[field]!r}" if field else "this alpha2 or alpha3"
    return Refused(409, f"a country with {taken} already exists")


async def _judge(request: Request, conn: asyncpg.Connection | None, code: str) -> None:
    """If-Match (strong) and If-None-Match (weak) against the ETag a GET would give, read
    FOR UPDATE in the write's transaction; no such country: the write's 404 wins. A POST
    (no `conn`) judges the collection, which has no ETag."""
    if_match, if_none_match = request.headers.get("if-match"), request.headers.get("if-none-match")
    if if_match is None and if_none_match is None:
        return
    etag = None
    if conn is not None:
        row = await conn.fetchrow(LOCKED[len(code)], code)
        if row is None:
            return
        etag = etag_for(orjson.dumps(dict(row)))
    if if_match is not None and not (
        if_match.strip() == "*" or etag in [tag.strip() for tag in if_match.split(",")]
    ):
        raise Refused(412, "If-Match does not match")
    if if_none_match is not None and (
        if_none_match.strip() == "*"
        or etag in {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    ):
        raise Refused(412, "If-None-Match matches")


async def create_country(request: Request) -> Response:
    try:
        values = await _body(request, create=True)
        await _judge(request, None, "")
        async with request.app.state.pool.acquire() as conn:
            try:
                async with conn.transaction(isolation="read_committed"):
                    row = await conn.fetchrow(INSERT, *values.values())
            except asyncpg.UniqueViolationError as exc:
                raise _conflict(exc, values) from None
    except Refused as refused:
        return _error(request, refused)
    body = orjson.dumps(dict(row))
    headers = {"ETag": etag_for(body), "Cache-Control": "no-cache"}
    return _answer(request, 201, body, {**headers, "Location": f"/country/{row['alpha2']}"})


async def update_country(request: Request) -> Response:
    try:
        code, values = _code(request), await _body(request, create=False)
        changes = ", ".join(f"{field} = ${i}" for i, field in enumerate(values, 1))
        update = (
            f"UPDATE country SET {changes} WHERE {KEY[len(code)]} = ${len(values) + 1} "
            "RETURNING alpha2"
        )
        async with request.app.state.pool.acquire() as conn:
            try:
                async with conn.transaction(isolation="read_committed"):
                    await _judge(request, conn, code)
                    alpha2 = await conn.fetchval(update, *values.values(), code)
            except asyncpg.UniqueViolationError as exc:
                raise _conflict(exc, values) from None
        if alpha2 is None:
            raise Refused(404, f"country {code!r} not found")
    except Refused as refused:
        return _error(request, refused)
    return _answer(request, 204, headers={"Location": f"/country/{alpha2}"})


async def delete_country(request: Request) -> Response:
    try:
        code = _code(request)
        _check_key(request)
        async with request.app.state.pool.acquire() as conn:
            async with conn.transaction(isolation="read_committed"):
                await _judge(request, conn, code)
                deleted = await conn.fetchval(DELETE[len(code)], code)
        if deleted is None:
            raise Refused(404, f"country {code!r} not found")
    except Refused as refused:
        return _error(request, refused)
    return _answer(request, 204)


def routes() -> list[Route]:
    """After the ceiling's GET routes on the same paths (Starlette tries them in order)."""
    return [
        Route("/country", create_country, methods=["POST"]),
        Route("/country/{code}", update_country, methods=["PATCH"]),
        Route("/country/{code}", delete_country, methods=["DELETE"]),
    ]

"""The /country resource (src/country) on the real migrated database (ISO data loaded by
a migration)."""

import asyncio

import pycountry
import pytest
from sqlalchemy import Engine, text

NEW = {"alpha2": "XA", "alpha3": "XAA", "name": "Test Land"}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def row(db: Engine, alpha2: str):
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT alpha2, alpha3, name, numeric, official_name FROM country WHERE alpha2 = :a"
            ),
            {"a": alpha2},
        ).one_or_none()


def snapshot(db: Engine) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM country ORDER BY id"))]


# --- reads -----------------------------------------------------------------------


async def test_list_defaults_to_50_ordered_by_alpha2(anon, db):
    response = await anon.get("/country")
    assert response.status_code == 200
    body = response.json()
    codes = sorted(c.alpha_2 for c in pycountry.countries)
    assert body["total"] == len(codes)
    assert (body["limit"], body["offset"]) == (50, 0)
    assert [item["alpha2"] for item in body["items"]] == codes[:50]
    first = body["items"][0]
    assert set(first) == {
        "alpha2",
        "alpha3",
        "numeric",
        "name",
        "official_name",
        "created_at",
        "source",
    }


async def test_pages_do_not_overlap_and_end_empty(anon, db):
    codes = sorted(c.alpha_2 for c in pycountry.countries)
    page2 = (await anon.get("/country", params={"limit": 10, "offset": 10})).json()
    assert [i["alpha2"] for i in page2["items"]] == codes[10:20]
    past_end = (await anon.get("/country", params={"offset": 10_000})).json()
    assert past_end["items"] == [] and past_end["total"] == len(codes)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 251},
        {"limit": "ten"},
        {"offset": -1},
        {"offset": 2**70},
        {"limit": 1e400},
        {"q": ""},
        {"q": "x" * 101},
        {"q": "a\x00b"},
    ],
)
async def test_bad_list_parameters_are_422(anon, db, params):
    response = await anon.get("/country", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["field"].startswith("query.")


async def test_name_filter_is_case_insensitive_and_literal(anon, db):
    found = (await anon.get("/country", params={"q": "KINGDOM"})).json()
    assert [i["alpha2"] for i in found["items"]] == ["GB"]
    assert found["total"] == 1
    for literal in ("%", "_", "' OR 1=1 --", "ünïcødé 🏳️"):
        response = await anon.get("/country", params={"q": literal})
        assert response.status_code == 200
        assert response.json()["total"] == 0, literal


@pytest.mark.parametrize("code", ["GB", "gb", "Gb", "GBR", "gbr"])
async def test_get_by_alpha2_or_alpha3_in_any_case(anon, db, code):
    response = await anon.get(f"/country/{code}")
    assert response.status_code == 200
    assert response.json() | {"created_at": None} == {
        "alpha2": "GB",
        "alpha3": "GBR",
        "numeric": "826",
        "name": "United Kingdom",
        "official_name": "United Kingdom of Great Britain and Northern Ireland",
        "created_at": None,
        "source": "iso",
    }


@pytest.mark.parametrize("code", ["QQ", "QQQ"])
async def test_unknown_code_is_404_json(anon, db, code):
    response = await anon.get(f"/country/{code}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"country '{code}' not found", "code": "not_found"}


@pytest.mark.parametrize("code", ["G1", "G", "GBRR", "%27%3B--", "%C3%BC%C3%BC"])
async def test_malformed_code_is_422(anon, db, code):
    response = await anon.get(f"/country/{code}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.code"


# --- keyset pages ------------------------------------------------------------------


async def walk(anon, url: str, params: dict | None = None, between=None) -> list[dict]:
    """Every item of a list, following `next` links; `between(page_no)` runs between pages."""
    items, response, page_no = [], await anon.get(url, params=params), 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next"] is None:
            return items
        assert len(body["items"]) == body["limit"]
        page_no += 1
        if between is not None:
            await between(page_no)
        response = await anon.get(body["next"])


async def test_next_links_walk_every_country_once(anon, db):
    codes = sorted(c.alpha_2 for c in pycountry.countries)
    items = await walk(anon, "/country", {"limit": 37})
    assert [i["alpha2"] for i in items] == codes
    last = (await anon.get("/country", params={"offset": len(codes) - 5})).json()
    assert last["next"] is None and last["total_exact"] is True


async def test_keyset_pages_are_stable_under_concurrent_inserts(anon, client, db):
    """Rows inserted before and after the cursor while a client pages neither repeat nor
    hide the rows that were there (an offset would repeat one per row inserted before)."""
    codes = sorted(c.alpha_2 for c in pycountry.countries)

    taken = set(codes)
    free = sorted(a + b for a in ALPHABET for b in ALPHABET if a + b not in taken)
    before, after = free[:3], free[-3:]  # below page 2's cursor, and above every cursor

    async def insert(page_no: int) -> None:
        if page_no <= 3:
            for alpha2 in (before[page_no - 1], after[page_no - 1]):
                body = {"alpha2": alpha2, "alpha3": f"Q{alpha2}", "name": "Inserted"}
                assert (await client.post("/country", json=body)).status_code == 201

    items = await walk(anon, "/country", {"limit": 50}, between=insert)
    seen = [i["alpha2"] for i in items]
    assert len(seen) == len(set(seen)), "an item was served twice"
    assert set(codes) <= set(seen), "an item that was there all along was skipped"
    assert set(after) <= set(seen)  # inserted ahead of the cursor: served when reached


@pytest.mark.parametrize(
    ("q", "alpha2"), [("åland", "AX"), ("CÔTE", "CI"), ("türkiye", "TR"), ("RÉUNION", "RE")]
)
async def test_name_filter_folds_case_beyond_ascii(anon, db, q, alpha2):
    """The database's builtin C.UTF-8 locale: lower() maps Å to å (a C locale does not)."""
    found = (await anon.get("/country", params={"q": q})).json()
    assert alpha2 in [i["alpha2"] for i in found["items"]], found


async def test_cursor_keeps_the_filter(anon, db):
    islands = sorted(c.alpha_2 for c in pycountry.countries if "island" in c.name.lower())
    items = await walk(anon, "/country", {"q": "island", "limit": 3})
    assert [i["alpha2"] for i in items] == islands


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "!!"},
        {"cursor": "a" * 65},
        {"cursor": "_w"},  # not UTF-8 once decoded
        {"cursor": "AA"},  # a NUL byte once decoded
        {"cursor": "R0I", "offset": 5},  # one way to page at a time
    ],
)
async def test_bad_cursors_are_422(anon, db, params):
    for url in ("/country", "/country/FR/subdivisions"):
        response = await anon.get(url, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"


async def test_totals_are_exact_up_to_the_cap_then_a_lower_bound(anon, db):
    from src.kit.pagination import TOTAL_CAP

    with db.begin() as conn:
        conn.execute(text("INSERT INTO country (alpha2, alpha3, name) VALUES ('XQ', 'XQQ', 'Big')"))
        conn.execute(
            text(
                "INSERT INTO subdivision (country_id, code, name, type) "
                "SELECT (SELECT id FROM country WHERE alpha2 = 'XQ'), 'XQ' || n, 'S' || n, 't' "
                "FROM generate_series(1, :n) AS n"
            ),
            {"n": TOTAL_CAP + 5},
        )
    page = (await anon.get("/country/XQ/subdivisions", params={"limit": 10})).json()
    assert (page["total"], page["total_exact"]) == (TOTAL_CAP, False)
    assert len(await walk(anon, "/country/XQ/subdivisions", {"limit": 250})) == TOTAL_CAP + 5


# --- conditional GET -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/country/GB", "/country?q=united", "/country/GB/subdivisions"])
async def test_etag_and_if_none_match(anon, db, path):
    first = await anon.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = await anon.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    listed = await anon.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    stale = await anon.get(path, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and stale.json() == first.json()


async def test_etag_changes_when_the_country_changes(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    etag = (await client.get("/country/XA")).headers["etag"]
    assert (await client.patch("/country/XA", json={"name": "Renamed"})).status_code == 204
    after = await client.get("/country/XA", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["name"] == "Renamed"
    assert after.headers["etag"] != etag


# --- create ----------------------------------------------------------------------


async def test_create_returns_201_location_and_stores_the_row(client, db):
    created = await client.post("/country", json=NEW | {"numeric": "999"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/country/XA"
    body = created.json()
    assert {k: body[k] for k in NEW} == NEW
    assert body["numeric"] == "999" and body["official_name"] is None
    assert body["source"] == "client"  # the column's default: the API never sets it
    assert tuple(row(db, "XA")) == ("XA", "XAA", "Test Land", "999", None)
    fetched = await client.get(created.headers["location"])
    assert fetched.json() == body


async def test_create_normalises_codes_and_whitespace(client, db):
    response = await client.post(
        "/country", json={"alpha2": " xb ", "alpha3": "xbb", "name": "  Spaced  "}
    )
    assert response.status_code == 201, response.text
    assert tuple(row(db, "XB"))[:3] == ("XB", "XBB", "Spaced")


async def test_unicode_and_sql_text_are_stored_literally(client, db):
    name = "Ünïcødé 🏳️‍🌈 '); DROP TABLE country; --"
    response = await client.post("/country", json=NEW | {"name": name})
    assert response.status_code == 201, response.text
    assert row(db, "XA").name == name


@pytest.mark.parametrize(
    ("field", "payload"),
    [
        ("alpha2", NEW | {"alpha2": "GB"}),
        ("alpha3", NEW | {"alpha3": "gbr"}),
    ],
)
async def test_duplicate_is_409_naming_the_field_and_changes_nothing(client, db, field, payload):
    before = snapshot(db)
    response = await client.post("/country", json=payload)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert field in body["detail"]
    assert snapshot(db) == before


async def test_concurrent_creates_of_one_code_give_exactly_one_201(client, db):
    responses = await asyncio.gather(*(client.post("/country", json=NEW) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM country WHERE alpha2 = 'XA'")) == 1


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"alpha2": "XYZ", "name": ""}, {"body.alpha2", "body.alpha3", "body.name"}),
        (NEW | {"alpha2": 12}, {"body.alpha2"}),
        (NEW | {"name": 10**100}, {"body.name"}),
        (NEW | {"name": None}, {"body.name"}),
        (NEW | {"name": "x" * 201}, {"body.name"}),
        (NEW | {"name": "Bad\x00Name"}, {"body.name"}),
        (NEW | {"name": "\u202eevil"}, {"body.name"}),
        (NEW | {"numeric": "12"}, {"body.numeric"}),
        (NEW | {"id": 7}, {"body.id"}),
        ([NEW], {"body"}),
        ("GB", {"body"}),
        ({}, {"body.alpha2", "body.alpha3", "body.name"}),
    ],
)
async def test_invalid_bodies_are_422_naming_fields(client, db, payload, fields):
    before = snapshot(db)
    response = await client.post("/country", json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert {err["field"] for err in body["errors"]} == fields
    assert all(err["message"] for err in body["errors"])
    assert snapshot(db) == before


async def test_lone_surrogate_is_422_not_500(client, db):
    raw = b'{"alpha2": "XA", "alpha3": "XAA", "name": "\\ud800"}'
    response = await client.post(
        "/country", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert row(db, "XA") is None


@pytest.mark.parametrize("content", [b"{not json", b"", b"null", b"\xff\xfe"])
async def test_malformed_or_empty_json_is_422(client, db, content):
    response = await client.post(
        "/country", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_body_is_415(client, db, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/country", content=b"alpha2=XA", headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert row(db, "XA") is None


async def test_oversized_body_is_413(client, db):
    huge = NEW | {"name": "x" * 100_000}
    response = await client.post("/country", json=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    async def chunks():
        for _ in range(100):
            yield b" " * 1024

    streamed = await client.post(
        "/country", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert row(db, "XA") is None


# --- authentication --------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "wrong", "test-api-key-012345678", "x" * 5000])
async def test_writes_need_the_right_key_and_change_nothing(anon, client, db, key):
    assert (await client.post("/country", json=NEW)).status_code == 201
    before = snapshot(db)
    headers = {} if key is None else {"X-API-Key": key}
    attempts = [
        await anon.post("/country", json=NEW | {"alpha2": "XB", "alpha3": "XBB"}, headers=headers),
        await anon.patch("/country/XA", json={"name": "Hacked"}, headers=headers),
        await anon.delete("/country/XA", headers=headers),
    ]
    for response in attempts:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "ApiKey"
    assert snapshot(db) == before


# --- update ----------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(client, db):
    assert (await client.post("/country", json=NEW | {"official_name": "Old"})).status_code == 201
    response = await client.patch("/country/xaa", json={"name": "New Name", "official_name": None})
    assert response.status_code == 204
    assert response.content == b""
    assert tuple(row(db, "XA")) == ("XA", "XAA", "New Name", None, None)


async def test_patch_can_change_the_code(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    response = await client.patch("/country/XA", json={"alpha2": "xc"})
    assert response.status_code == 204
    assert response.headers["location"] == "/country/XC"
    assert row(db, "XA") is None and row(db, "XC").alpha3 == "XAA"


async def test_patch_errors(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    before = snapshot(db)
    cases = [
        ("/country/QQ", {"name": "x"}, 404),
        ("/country/XA", {"alpha3": "GBR"}, 409),
        ("/country/XA", {}, 422),
        ("/country/XA", {"name": None}, 422),
        ("/country/XA", {"alpha2": "G"}, 422),
        ("/country/XA", {"unknown": 1}, 422),
    ]
    for path, payload, expected in cases:
        response = await client.patch(path, json=payload)
        assert response.status_code == expected, (payload, response.text)
        assert response.json()["detail"]
    assert snapshot(db) == before


# --- delete ----------------------------------------------------------------------


async def test_delete_removes_the_country_and_its_subdivisions(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subdivision (country_id, code, name, type) "
                "SELECT id, 'XA-01', 'Test Province', 'Province' FROM country WHERE alpha2 = 'XA'"
            )
        )
    assert (await client.get("/country/XA/subdivisions")).json()["total"] == 1
    response = await client.delete("/country/XA")
    assert response.status_code == 204
    assert row(db, "XA") is None
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM subdivision WHERE code = 'XA-01'")) == 0
    assert (await client.delete("/country/XA")).status_code == 404


# --- conditional writes (RFC 9110 §13): 412, never 304, and nothing changes -----------


async def test_if_match_makes_patch_and_delete_conditional(client, db):
    assert (await client.post("/country", json=NEW)).status_code == 201
    etag = (await client.get("/country/XA")).headers["etag"]
    stale = await client.patch("/country/XA", json={"name": "Lost"}, headers={"If-Match": '"x"'})
    assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
    weak = await client.patch(
        "/country/XA", json={"name": "Lost"}, headers={"If-Match": f"W/{etag}"}
    )
    assert weak.status_code == 412  # If-Match compares strongly
    assert row(db, "XA").name == "Test Land"
    fresh = await client.patch("/country/XA", json={"name": "Kept"}, headers={"If-Match": etag})
    assert fresh.status_code == 204 and row(db, "XA").name == "Kept"
    refused = await client.delete("/country/XA", headers={"If-Match": etag})  # changed since
    assert refused.status_code == 412 and row(db, "XA") is not None
    current = (await client.get("/country/XA")).headers["etag"]
    assert (await client.delete("/country/XA", headers={"If-Match": current})).status_code == 204
    assert row(db, "XA") is None


async def test_if_none_match_on_writes_is_412_not_304(client, db):
    before = snapshot(db)
    created = await client.post("/country", json=NEW, headers={"If-None-Match": "*"})
    assert created.status_code == 412, created.text  # the collection exists
    assert created.json()["code"] == "precondition_failed" and snapshot(db) == before
    assert (await client.post("/country", json=NEW, headers={"If-Match": "*"})).status_code == 201
    etag = (await client.get("/country/XA")).headers["etag"]
    for method in ("PATCH", "DELETE"):
        body = {"name": "X"} if method == "PATCH" else None
        for header in ("*", etag):
            answer = await client.request(
                method, "/country/XA", json=body, headers={"If-None-Match": header}
            )
            assert answer.status_code == 412, (method, header, answer.status_code)
    assert row(db, "XA").name == "Test Land"
    other = await client.patch(
        "/country/XA", json={"name": "Y"}, headers={"If-None-Match": '"other"'}
    )
    assert other.status_code == 204


async def test_preconditions_on_an_unknown_country_leave_its_404(client, db):
    for method in ("PATCH", "DELETE"):
        body = {"name": "X"} if method == "PATCH" else None
        answer = await client.request(method, "/country/QQ", json=body, headers={"If-Match": "*"})
        assert answer.status_code == 404, method

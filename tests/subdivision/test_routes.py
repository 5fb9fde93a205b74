"""A country's subdivisions (src/subdivision) on the real migrated database."""

import pycountry


async def test_subdivisions_are_paginated_with_parents(anon, db):
    expected = sorted(s.code for s in pycountry.subdivisions.get(country_code="FR"))
    page = (await anon.get("/country/fra/subdivisions", params={"limit": 250})).json()
    assert page["total"] == len(expected)
    assert [s["code"] for s in page["items"]] == expected[:250]
    by_code = {s["code"]: s for s in page["items"]}
    assert by_code["FR-01"] == {
        "code": "FR-01",
        "name": "Ain",
        "type": "Metropolitan department",
        "parent_code": "FR-ARA",
    }
    assert by_code["FR-ARA"]["parent_code"] is None
    second = (await anon.get("/country/FR/subdivisions", params={"offset": 250})).json()
    assert [s["code"] for s in second["items"]] == expected[250:300]


async def test_subdivisions_of_unknown_country_is_404(anon, db):
    response = await anon.get("/country/QQ/subdivisions")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_subdivisions_filter_by_name(anon, db):
    found = (await anon.get("/country/FR/subdivisions", params={"q": "PARIS"})).json()
    assert [s["code"] for s in found["items"]] == ["FR-75C"]
    assert found["total"] == 1 and found["total_exact"] is True
    found = (await anon.get("/country/FR/subdivisions", params={"q": "ÎLE-DE"})).json()
    assert [s["code"] for s in found["items"]] == ["FR-IDF"]

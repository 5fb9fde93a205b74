"""src/kit/text.py: a name shows something, and holds only assigned, visible characters.

Through POST and PATCH /country on the real database: the rules are the API's contract.
"""

import pytest
from sqlalchemy import Engine, text

NEW = {"alpha2": "QT", "alpha3": "QTT"}

# name, why it is refused (what the 422 says)
INVISIBLE = [
    ("\u200b\u200b", "invisible format character U+200B"),
    ("\u200d", "letter or digit"),  # a joiner alone joins nothing
    ("\ufeff", "invisible format character U+FEFF"),
    ("\uffff", "noncharacter U+FFFF"),
    ("\ufdd0", "noncharacter U+FDD0"),
    ("\u0301\u0308\u20dd", "letter or digit"),  # combining marks only
    ("\ue000", "private-use"),
    ("\U000f0000", "private-use"),
    ("Kos\ue000ovo", "private-use or noncharacter U+E000"),
    ("Kosovo\u200b", "invisible format character U+200B"),
    ("Ko\u00adsovo", "invisible format character U+00AD"),  # soft hyphen
    ("Kos\u2060ovo", "invisible format character U+2060"),  # word joiner
    ("Kosovo\U000e0001", "invisible format character U+E0001"),  # language tag
    ("Kos\u0378ovo", "unassigned"),  # in the Greek block, never assigned
    ("!?", "letter or digit"),
]
# Real names: combining marks, virama + ZWJ (Devanagari), ZWNJ (Persian), emoji sequences.
VISIBLE = [
    "मिज़ोरम",  # Mizoram: nukta and vowel signs (combining marks)
    "क्\u200dष",  # virama and ZWJ: a half form
    # the United States in Persian, with ZWNJ
    "\u0627\u06cc\u0627\u0644\u0627\u062a\u200c\u0645\u062a\u062d\u062f\u0647",
    "Scotland \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # tag flag
    "Nou\u0301mea",  # e + combining acute
]


def stored_name(db: Engine, alpha2: str) -> str | None:
    with db.connect() as conn:
        return conn.scalar(text("SELECT name FROM country WHERE alpha2 = :a"), {"a": alpha2})


def refused(response, field: str, why: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    [error] = body["errors"]
    assert error["field"] == field and why in error["message"], error


@pytest.mark.parametrize(("name", "why"), INVISIBLE, ids=[ascii(n) for n, _ in INVISIBLE])
async def test_an_invisible_or_unassigned_name_is_refused(client, db, name, why):
    refused(await client.post("/country", json=NEW | {"name": name}), "body.name", why)
    assert stored_name(db, "QT") is None
    patched = await client.patch("/country/GB", json={"official_name": name})
    refused(patched, "body.official_name", why)


@pytest.mark.parametrize("name", VISIBLE, ids=[ascii(n) for n in VISIBLE])
async def test_real_names_with_marks_and_joiners_are_stored_as_sent(client, db, name):
    response = await client.post("/country", json=NEW | {"name": name})
    assert response.status_code == 201, response.text
    assert stored_name(db, "QT") == name
    patched = await client.patch("/country/QT", json={"official_name": name})
    assert patched.status_code == 204, patched.text

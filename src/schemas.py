"""Request and response bodies: the API's contract, validated by Pydantic v2."""

import base64
import binascii
import unicodedata
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

# Bidirectional overrides/isolates can make text display differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Unicode's White_Space characters: trimmed from both ends of a text (str.strip() would
# also take \x1c-\x1f, which are refused instead).
_WHITESPACE = "\t\n\x0b\x0c\r\x85 \xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)

# _text below as a JSON Schema pattern (ECMA-262 and Python `re` alike), for the OpenAPI
# document only: whitespace at either end, then at least one non-space character and no
# control (Cc) or bidi character. tests/test_schemas.py holds it to _text for every
# character, tests/test_docs_browser.py holds the browser's RegExp to Python's.
_REFUSED = r"\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069"
_SPACES = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TRIMMED = rf"\u0009-\u000d\u0085{_SPACES}"
TEXT_PATTERN = f"^[{_TRIMMED}]*[^{_REFUSED}]*[^{_REFUSED}{_SPACES}][^{_REFUSED}]*[{_TRIMMED}]*$"
TEXT_RULES = (
    "The length counts the text as sent; surrounding whitespace is then trimmed. Control "
    "characters, bidi overrides and lone surrogates (not valid Unicode) are refused."
)


def _clean_text(value: str) -> str:
    """Any script or emoji (joiners included), but no control characters, lone
    surrogates (PostgreSQL cannot store them) or bidi overrides."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("must be valid unicode (no lone surrogates)")
        if category == "Cc" or char in _BIDI_CONTROLS:
            raise ValueError(f"must not contain control character U+{ord(char):04X}")
    return value


def _text(value: str) -> str:
    """Trimmed, clean and not blank (its length was checked as sent, as the schema says)."""
    value = _clean_text(value.strip(_WHITESPACE))
    if not value:
        raise ValueError("must not be only whitespace")
    return value


Alpha2 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$"),
    Field(description="ISO 3166-1 alpha-2 code (letters, any case)", examples=["XK"]),
]
Alpha3 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$"),
    Field(description="ISO 3166-1 alpha-3 code (letters, any case)", examples=["XKX"]),
]
Numeric = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{3}$"),
    Field(description="ISO 3166-1 numeric code, three digits", examples=["926"]),
]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_text),
    Field(
        description=f"Any script or emoji. {TEXT_RULES}",
        examples=["Kosovo"],
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_text),
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
]


class CountryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "alpha2": "XK",
                    "alpha3": "XKX",
                    "name": "Kosovo",
                    "numeric": "926",
                    "official_name": "Republic of Kosovo",
                }
            ]
        },
    )

    alpha2: Alpha2
    alpha3: Alpha3
    name: Name
    numeric: Numeric | None = None
    official_name: Name | None = None


class CountryUpdate(BaseModel):
    """Only the fields sent change (at least one); `numeric` and `official_name` may be set
    to null, the others may be left out but not nulled."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "minProperties": 1,
            "examples": [{"name": "Kosova", "official_name": None}],
        },
    )

    # MISSING: optional but not nullable, and the OpenAPI schema says so.
    alpha2: Alpha2 | MISSING = MISSING
    alpha3: Alpha3 | MISSING = MISSING
    name: Name | MISSING = MISSING
    numeric: Numeric | None = None
    official_name: Name | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> "CountryUpdate":
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


class CountryRead(BaseModel):
    alpha2: str = Field(examples=["GB"])
    alpha3: str = Field(examples=["GBR"])
    numeric: str | None = Field(examples=["826"])
    name: str = Field(examples=["United Kingdom"])
    official_name: str | None = Field(
        examples=["United Kingdom of Great Britain and Northern Ireland"]
    )
    created_at: datetime
    source: Literal["iso", "client"] = Field(
        description="where the row came from: the ISO 3166-1 data the service loads, or a client"
    )


class SubdivisionRead(BaseModel):
    code: str = Field(examples=["GB-ENG"])
    name: str = Field(examples=["England"])
    type: str = Field(examples=["Country"])
    parent_code: str | None = Field(examples=[None])


Item = TypeVar("Item")


def _decode_cursor(value: str) -> str:
    """The sort key after which the page starts (the cursor is its base64url form)."""
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor from a `next` link") from None
    _clean_text(key)
    return key


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


# base64url without padding (no length of 4n+1), up to 64 characters.
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4}){0,15}[A-Za-z0-9_-]{2,4}$"
Cursor = Annotated[
    str,
    StringConstraints(pattern=CURSOR_PATTERN),
    AfterValidator(_decode_cursor),
]


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    total: int = Field(
        description="matching items in all pages, counted up to a cap: exact when "
        "`total_exact`, else a lower bound"
    )
    total_exact: bool
    limit: int
    offset: int
    next: str | None = Field(
        description="the next page (keyset: stable under concurrent inserts), or null "
        "on the last one",
        examples=["/country?limit=50&cursor=R0I"],
    )

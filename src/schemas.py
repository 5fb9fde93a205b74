"""Request and response bodies: the API's contract, validated by Pydantic v2."""

import base64
import binascii
import unicodedata
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# Bidirectional overrides/isolates can make text display differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_clean_text),
    Field(examples=["Kosovo"]),
]
SearchText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_clean_text),
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
    """Only the fields sent change; `numeric` and `official_name` may be set to null."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Kosova", "official_name": None}]},
    )

    alpha2: Alpha2 | None = None
    alpha3: Alpha3 | None = None
    name: Name | None = None
    numeric: Numeric | None = None
    official_name: Name | None = None


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


Cursor = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$"),
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

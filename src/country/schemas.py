"""The /country request and response bodies: the API's contract, validated by Pydantic v2."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from src.kit.text import Name

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

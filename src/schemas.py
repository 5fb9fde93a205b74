"""Request and response bodies: the API's contract, validated by Pydantic v2."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


Alpha2 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$"),
    Field(description="ISO 3166-1 alpha-2 code", examples=["GB"]),
]
Alpha3 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$"),
    Field(description="ISO 3166-1 alpha-3 code", examples=["GBR"]),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_printable),
    Field(examples=["United Kingdom"]),
]


class CountryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha2: Alpha2
    alpha3: Alpha3
    name: Name


class CountryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alpha2: str
    alpha3: str | None
    name: str

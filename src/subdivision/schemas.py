"""The subdivisions' response body."""

from pydantic import BaseModel, Field


class SubdivisionRead(BaseModel):
    code: str = Field(examples=["GB-ENG"])
    name: str = Field(examples=["England"])
    type: str = Field(examples=["Country"])
    parent_code: str | None = Field(examples=[None])

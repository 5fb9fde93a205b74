"""Typed SQLAlchemy models: the schema at head, which Alembic autogenerates from and the
drift gate compares with the revisions."""

import enum
from datetime import datetime

from sqlalchemy import DateTime, Enum, ForeignKey, Identity, Index, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from src.kit.triggers import cached

# Deterministic, Postgres-style constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def name_search_index(table: str, name: Mapped[str]) -> Index:
    """GIN trigrams of lower(name): serves the `?q=` substring filter (kit.pagination)."""
    return Index(
        f"{table}_name_trgm_idx",
        func.lower(name).label("lower_name"),
        postgresql_using="gin",
        postgresql_ops={"lower_name": "gin_trgm_ops"},
    )


class CountrySource(enum.StrEnum):
    """Where a country row came from: the ISO 3166-1 data the migrations load, or a client."""

    ISO = "iso"
    CLIENT = "client"


@cached
class Country(Base):
    """An ISO 3166-1 country (or a user-assigned code such as XK)."""

    __tablename__ = "country"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    alpha2: Mapped[str] = mapped_column(String(2), unique=True)
    alpha3: Mapped[str] = mapped_column(String(3), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    numeric: Mapped[str | None] = mapped_column(String(3))
    official_name: Mapped[str | None] = mapped_column(String(200))
    # A PostgreSQL enum type, with the values (not the Python names) as its labels.
    source: Mapped[CountrySource] = mapped_column(
        Enum(CountrySource, name="country_source", values_callable=lambda e: [m.value for m in e]),
        server_default=CountrySource.CLIENT.value,
    )

    subdivisions: Mapped[list["Subdivision"]] = relationship(
        back_populates="country", passive_deletes=True
    )

    __table_args__ = (name_search_index("country", name),)


@cached
class Subdivision(Base):
    """An ISO 3166-2 subdivision, optionally inside a parent subdivision."""

    __tablename__ = "subdivision"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    country_id: Mapped[int] = mapped_column(
        ForeignKey("country.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(6), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("subdivision.id", ondelete="SET NULL"), index=True
    )

    country: Mapped[Country] = relationship(back_populates="subdivisions")

    __table_args__ = (name_search_index("subdivision", name),)

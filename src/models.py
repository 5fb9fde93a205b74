"""Typed SQLAlchemy models: the source Alembic autogenerates revisions from."""

from sqlalchemy import Identity, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Country(Base):
    """An ISO 3166-1 country."""

    __tablename__ = "country"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    alpha2: Mapped[str] = mapped_column(String(2), unique=True)
    alpha3: Mapped[str | None] = mapped_column(String(3), unique=True)
    name: Mapped[str] = mapped_column(String(200))

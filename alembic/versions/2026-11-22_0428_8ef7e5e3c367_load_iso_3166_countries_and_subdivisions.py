"""load iso 3166 countries and subdivisions

Revision ID: 8ef7e5e3c367
Revises: 486626707430
Create Date: 2026-11-22 04:28:10.896397+00:00

Data: ISO 3166-1 countries and ISO 3166-2 subdivisions as pycountry 26.2.16 had them,
shipped in data/ and checked by its sha256: every database at this revision gets the same
rows, and the downgrade tells them apart, whatever pycountry is installed.

Idempotent: ON CONFLICT DO NOTHING, so countries that already exist (by alpha2 or
alpha3, e.g. created through the API) are left exactly as they are, and running it
twice adds nothing. Batched, literal VALUES: renders offline too. Lightweight
sa.table() definitions, never the app's models.

The downgrade removes only what this added and nobody changed since: subdivisions whose
code, name, type and country still equal the ISO data, then countries whose row still
equals it and that have no subdivision left. Rows a client added or edited stay, and so
do the countries they belong to (no ON DELETE CASCADE reaches them); upgrading again
adds the removed rows back and leaves the kept ones alone.
"""

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import insert

revision: str = "8ef7e5e3c367"
down_revision: str | Sequence[str] | None = "486626707430"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


BATCH = 500
# The ISO data as this revision was written (pycountry 26.2.16), shipped beside it and
# checked by its digest: a library read at run time gives whatever version is installed.
DATA = Path(__file__).parent / "data" / "iso3166_pycountry_26.2.16.json"
DATA_SHA256 = "44bb5f47dee0e4082e651b5d059c934c8ec3041dcc3757a6805f3878b346419e"


def iso_data() -> dict[str, list[list[str | None]]]:
    raw = DATA.read_bytes() if DATA.is_file() else b""
    if hashlib.sha256(raw).hexdigest() != DATA_SHA256:
        raise RuntimeError(
            f"{DATA.name} is missing or not the data revision {revision} was written with "
            f"(sha256 {DATA_SHA256[:12]}...): restore it from git (new data goes in a new "
            "revision with its own file)"
        )
    return json.loads(raw)


country = sa.table(
    "country",
    sa.column("id", sa.Integer),
    sa.column("alpha2", sa.String),
    sa.column("alpha3", sa.String),
    sa.column("numeric", sa.String),
    sa.column("name", sa.String),
    sa.column("official_name", sa.String),
)
subdivision = sa.table(
    "subdivision",
    sa.column("country_id", sa.Integer),
    sa.column("code", sa.String),
    sa.column("name", sa.String),
    sa.column("type", sa.String),
)
COUNTRY_COLUMNS = ("alpha2", "alpha3", "numeric", "name", "official_name")
SUBDIVISION_COLUMNS = ("code", "country_alpha2", "name", "type")


def iso_countries() -> list[tuple]:
    """(alpha2, alpha3, numeric, name, official_name), by alpha2."""
    return [tuple(row) for row in iso_data()["countries"]]


def iso_subdivisions() -> list[tuple]:
    """(code, country alpha2, name, type), by code."""
    return [tuple(row[:4]) for row in iso_data()["subdivisions"]]


def batches(rows: list[tuple]):
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def values(columns: tuple[str, ...], rows: list[tuple]) -> sa.Values:
    return sa.values(*(sa.column(name, sa.String) for name in columns), name="iso").data(rows)


def upgrade() -> None:
    for rows in batches(iso_countries()):
        iso = values(COUNTRY_COLUMNS, rows)
        op.execute(
            insert(country)
            .from_select(COUNTRY_COLUMNS, sa.select(*(iso.c[name] for name in COUNTRY_COLUMNS)))
            .on_conflict_do_nothing()
        )
    for rows in batches(iso_subdivisions()):
        iso = values(SUBDIVISION_COLUMNS, rows)
        op.execute(
            insert(subdivision)
            .from_select(
                ("country_id", "code", "name", "type"),
                sa.select(country.c.id, iso.c.code, iso.c.name, iso.c.type).join(
                    country, country.c.alpha2 == iso.c.country_alpha2
                ),
            )
            .on_conflict_do_nothing()
        )


def downgrade() -> None:
    for rows in batches(iso_subdivisions()):
        iso = values(SUBDIVISION_COLUMNS, rows)
        op.execute(
            subdivision.delete().where(
                subdivision.c.code == iso.c.code,
                subdivision.c.name.is_not_distinct_from(iso.c.name),
                subdivision.c.type.is_not_distinct_from(iso.c.type),
                subdivision.c.country_id == country.c.id,
                country.c.alpha2 == iso.c.country_alpha2,
            )
        )
    # A country keeps its id while any subdivision (a client's, or an edited one) needs it.
    in_use = sa.exists().where(subdivision.c.country_id == country.c.id)
    for rows in batches(iso_countries()):
        iso = values(COUNTRY_COLUMNS, rows)
        unchanged = [country.c[name].is_not_distinct_from(iso.c[name]) for name in COUNTRY_COLUMNS]
        op.execute(country.delete().where(*unchanged, ~in_use))
    if not context.is_offline_mode():  # say what stays, so a rollback surprises nobody
        count = sa.select(sa.func.count())
        kept = [op.get_bind().scalar(count.select_from(t)) for t in (country, subdivision)]
        if any(kept):
            logging.getLogger("alembic.runtime.migration").info(
                "kept %d countries and %d subdivisions: rows clients added or edited, and the "
                "countries of those subdivisions (docs/migrations.md)",
                *kept,
            )

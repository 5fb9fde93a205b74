"""backfill country alpha3

Revision ID: 847f19ae2edf
Revises: 08f1eb8c3f28
Create Date: 2026-11-22 04:28:08.729906+00:00

Step 2 of 3 of adding a required column (nullable → backfill → NOT NULL): fill
country.alpha3 from ISO 3166-1 (pycountry 26.2.16's, shipped in data/ and checked by its
sha256, so the installed pycountry does not matter) where it is still NULL.

Batched: one UPDATE per BATCH codes, so no statement holds row locks on the whole
table; literal VALUES lists, so it also renders offline (`--sql`). Rows whose alpha2
is not an ISO code keep NULL here; the next revision explains how to fix them.
Lightweight sa.table() definitions, not the app's models, so this keeps working
whatever the models become.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "847f19ae2edf"
down_revision: str | Sequence[str] | None = "08f1eb8c3f28"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


BATCH = 100
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
    sa.column("alpha2", sa.String),
    sa.column("alpha3", sa.String),
)


def upgrade() -> None:
    pairs = [(alpha2, alpha3) for alpha2, alpha3, *_ in iso_data()["countries"]]
    for start in range(0, len(pairs), BATCH):
        iso = sa.values(
            sa.column("alpha2", sa.String), sa.column("alpha3", sa.String), name="iso"
        ).data(pairs[start : start + BATCH])
        op.execute(
            country.update()
            .where(country.c.alpha2 == iso.c.alpha2, country.c.alpha3.is_(None))
            .values(alpha3=iso.c.alpha3)
        )


def downgrade() -> None:
    # Nothing to undo: the column stays nullable at the previous revision, and
    # clearing it would also erase alpha3 values that clients wrote themselves.
    pass

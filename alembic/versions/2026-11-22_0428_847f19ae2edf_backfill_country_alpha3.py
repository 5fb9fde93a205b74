"""backfill country alpha3

Revision ID: 847f19ae2edf
Revises: 08f1eb8c3f28
Create Date: 2026-11-22 04:28:08.729906+00:00

Step 2 of 3 of adding a required column (nullable → backfill → NOT NULL): fill
country.alpha3 from ISO 3166-1 (pycountry) where it is still NULL.

Batched: one UPDATE per BATCH codes, so no statement holds row locks on the whole
table; literal VALUES lists, so it also renders offline (`--sql`). Rows whose alpha2
is not an ISO code keep NULL here; the next revision explains how to fix them.
Lightweight sa.table() definitions, not the app's models, so this keeps working
whatever the models become.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "847f19ae2edf"
down_revision: str | Sequence[str] | None = "08f1eb8c3f28"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


BATCH = 100

country = sa.table(
    "country",
    sa.column("alpha2", sa.String),
    sa.column("alpha3", sa.String),
)


def upgrade() -> None:
    import pycountry

    pairs = sorted((c.alpha_2, c.alpha_3) for c in pycountry.countries)
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

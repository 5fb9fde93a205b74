"""add country numeric and official name

Revision ID: 3350ce982f94
Revises: f868c4427b09
Create Date: 2026-11-22 04:28:10.088063+00:00

country.numeric (ISO 3166-1 numeric, kept as text: "004" has a leading zero) and
country.official_name: nullable additions, instant on any table size.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3350ce982f94"
down_revision: str | Sequence[str] | None = "f868c4427b09"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Squawk rules this revision knowingly breaks, with why (alembic-pg-guard's squawk gate).
squawk_allow = {
    "prefer-text-field": "lengths are ISO formats; nullable ADD COLUMN is instant",
}


def upgrade() -> None:
    op.add_column("country", sa.Column("numeric", sa.String(length=3), nullable=True))
    op.add_column("country", sa.Column("official_name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("country", "official_name")
    op.drop_column("country", "numeric")

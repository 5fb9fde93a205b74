"""add country created_at

Revision ID: f868c4427b09
Revises: 185c925ed393
Create Date: 2026-11-22 04:28:09.626887+00:00

country.created_at: a column added with a server default.

Since PostgreSQL 11, ADD COLUMN with a non-volatile default (now() is evaluated once,
at ALTER time) is a catalog-only change: no table rewrite, so NOT NULL comes for free.
Existing rows get the migration's timestamp; new rows get their insert time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f868c4427b09"
down_revision: str | Sequence[str] | None = "185c925ed393"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "country",
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("country", "created_at")

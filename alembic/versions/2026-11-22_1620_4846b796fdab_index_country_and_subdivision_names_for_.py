"""index country and subdivision names for substring search

Revision ID: 4846b796fdab
Revises: d6afc1b465f9
Create Date: 2026-11-22 16:20:01.482158+00:00

`?q=` filters with lower(name) LIKE '%text%' (src/queries.py): a leading wildcard no
B-tree can serve, so without an index every search reads the whole table. A GIN index of
trigrams (pg_trgm, shipped with PostgreSQL and trusted: the database owner may create
it) on lower(name) serves it at any table size.

CREATE INDEX CONCURRENTLY cannot run in a transaction, hence autocommit_block(); it does
not block writes. A failed build leaves an INVALID index that IF NOT EXISTS would keep,
so the upgrade drops any leftover first. The downgrade drops the extension too, without
CASCADE: if anything else came to use pg_trgm, it fails rather than break that.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4846b796fdab"
down_revision: str | Sequence[str] | None = "d6afc1b465f9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Squawk rules this revision knowingly breaks, with why (alembic-pg-guard's squawk gate).
squawk_allow = {
    "prefer-robust-stmts": "IF NOT EXISTS would keep an INVALID leftover; it is dropped first",
    "mixed-autocommit-block": (
        "up: CREATE EXTENSION IF NOT EXISTS reruns harmlessly; down: the extension goes "
        "last, and if that fails something else uses it: keep it (alembic stamp d6afc1b465f9)"
    ),
    "ban-drop-extension": "without CASCADE: it fails rather than break what else uses it",
}

INDEXES = {"country": "country_name_trgm_idx", "subdivision": "subdivision_name_trgm_idx"}


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.get_context().autocommit_block():
        for table, index in INDEXES.items():
            op.drop_index(
                op.f(index), table_name=table, postgresql_concurrently=True, if_exists=True
            )
            op.create_index(
                op.f(index),
                table,
                [sa.text("lower(name) gin_trgm_ops")],
                postgresql_using="gin",
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for table, index in INDEXES.items():
            op.drop_index(op.f(index), table_name=table, postgresql_concurrently=True)
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")

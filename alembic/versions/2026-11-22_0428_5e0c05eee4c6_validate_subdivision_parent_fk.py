"""validate subdivision parent fk

Revision ID: 5e0c05eee4c6
Revises: 726cc7c321d4
Create Date: 2026-11-22 04:28:11.782629+00:00

Validate subdivision_parent_id_fkey, added NOT VALID by the previous revision.

VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, which lets reads
and writes go on. In its own revision, hence its own transaction, so the previous
revision's brief ACCESS EXCLUSIVE lock is long released.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5e0c05eee4c6"
down_revision: str | Sequence[str] | None = "726cc7c321d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE subdivision VALIDATE CONSTRAINT subdivision_parent_id_fkey")


def downgrade() -> None:
    # A constraint cannot be "unvalidated"; re-adding it NOT VALID is the faithful undo.
    op.drop_constraint(op.f("subdivision_parent_id_fkey"), "subdivision", type_="foreignkey")
    op.execute(
        "ALTER TABLE subdivision ADD CONSTRAINT subdivision_parent_id_fkey FOREIGN KEY "
        "(parent_id) REFERENCES subdivision (id) ON DELETE SET NULL NOT VALID"
    )

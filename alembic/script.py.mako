"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Review before committing: autogenerate cannot see renames, data moves or
server-side objects, and every downgrade must really undo the upgrade.
"""

from collections.abc import Sequence

## Kept even while unused (noqa): a hand-written revision's first op./sa. call needs them.
## alembic.ini's ruff hook (RUF100) drops the noqa again where a revision uses them.
import sqlalchemy as sa  # noqa: F401  (for the first sa. call written by hand)
from alembic import op  # noqa: F401  (for the first op. call written by hand)
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}

"""notify country api of country and subdivision changes

Revision ID: 5b9ddd46c151
Revises: aab8f9bb2bdb
Create Date: 2026-12-01 21:33:07.918871+00:00

Every API process caches /country responses and flushes them when PostgreSQL says the
data changed (src/cache.py, docs/cache.md). Statement-level triggers on both tables
NOTIFY `country_api_changed` (payload: the table) for every INSERT, UPDATE, DELETE and
TRUNCATE, whoever runs it; PostgreSQL delivers it at commit, and not at all on rollback.
They run as the writer (SECURITY INVOKER): pg_notify needs no privilege.

CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock: reads go on, writes wait for this short
transaction, and the runner's lock_timeout stops it rather than let it queue behind a
long transaction. OR REPLACE makes the upgrade re-runnable; the downgrade drops the
triggers, then the function.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5b9ddd46c151"
down_revision: str | Sequence[str] | None = "aab8f9bb2bdb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "country_api_changed"  # src/cache.py listens on the same name
FUNCTION = "notify_country_api_change"
TABLES = ("country", "subdivision")


def upgrade() -> None:
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_catalog.pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE OR REPLACE TRIGGER {table}_notify_change "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_change ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")

"""Alembic environment: synchronous psycopg2, models from src.models, every run under
alembic-pg-guard (its README): the migration lock, timeouts and retries, history
integrity, leftovers, and autogenerate's enum, CHECK and rename guards.

Settings come from the caller (`alembic_pg_guard.attach`), else from alembic.ini's
[alembic_pg_guard] settings function (src/migrations.py), read once.
"""

from logging.config import fileConfig

from alembic import context
from alembic_pg_guard import run_env

from src.kit.triggers import PLUGIN
from src.models import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Tables that live in our database but are not ours (extensions, other tools).
UNOWNED_TABLES = frozenset({"spatial_ref_sys"})

# The cache's NOTIFY triggers, compared and written by autogenerate (docs/resources.md).
run_env(context, Base.metadata, skip_tables=UNOWNED_TABLES, plugins=[PLUGIN])

"""Country API: async FastAPI on asyncpg, schema owned by Alembic."""

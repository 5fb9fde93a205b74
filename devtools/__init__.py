"""Developer tooling: the embedded PostgreSQL, `pipenv run start`, the migration gates.

Not shipped in the API image; `src/` imports nothing from here.
"""

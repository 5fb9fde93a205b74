"""Side-by-side benchmark of the real app against a raw Starlette + asyncpg ceiling.

`pipenv run bench` (see bench/run.py and docs/performance.md).
"""

"""This project's rehearsal (docs/rehearse.md): what alembic-pg-guard's `rehearse` serves
(target.py) and the /country load it sends (loadgen.py)."""

"""`rehearse`'s public part: what a project names as rehearse_target in alembic.ini.
Kept apart from the package's root so that the runner never imports the rehearse extra."""

from alembic_pg_guard._rehearse.target import RehearsalTarget

__all__ = ["RehearsalTarget"]

"""`rehearse`'s public part: what a project names as rehearse_target in alembic.ini, and
the timings `rehearse --rolling` defaults to (a project's manifests can be checked against
them). Kept apart from the package's root so that the runner never imports the rehearse extra."""

from alembic_pg_guard._rehearse.target import RehearsalTarget
from alembic_pg_guard._rehearse.timings import Timings as RollingTimings

__all__ = ["RehearsalTarget", "RollingTimings"]

"""The registry: every resource of the API, one line each. The app includes their routers,
the method guard and OpenAPI see their routes, and the response cache keeps the reads of
those whose tables are all @cached (src/models.py)."""

from src.country.routes import resource as country
from src.kit.resource import Resource, cached_tables
from src.models import Base
from src.subdivision.routes import resource as subdivision

RESOURCES: tuple[Resource, ...] = (
    country,
    subdivision,
)
CACHED_TABLES = cached_tables(RESOURCES, Base.metadata)

"""What routes take from the application state, typed."""

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from src.config import Settings
from src.db import Database


def database(request: Request) -> Database:
    """The Database the lifespan created (a plain call: no per-request dependency cost)."""
    return request.app.state.database


def settings(request: Request) -> Settings:
    return request.app.state.settings


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route (its dependencies included) declares."""
    names = frozenset(param.alias for param in dependant.query_params)
    return names.union(*(_query_names(sub) for sub in dependant.dependencies))


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not declare: ignored, each would still be a
    new response cache key (a flood of them evicts real entries) and a client's typo unsaid.
    `async`: FastAPI runs a plain `def` dependency in a worker thread, a hop per request."""
    if not request.query_params:  # most requests: nothing to walk the route for
        return
    known = _query_names(request.scope["route"].dependant)  # a few fields
    if unknown := sorted(set(request.query_params) - known):
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": f"unknown query parameter (takes: {takes})"}
                for name in unknown
            ]
        )

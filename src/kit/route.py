"""The route class of every resource: strict JSON bodies (src/kit/bodies.py) and no query
parameter the route does not declare. Checked in the route's handler, not as a dependency:
FastAPI solves a dependency on every request, this costs nothing without a query string."""

from collections.abc import Callable, Coroutine
from functools import cached_property
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from src.kit.bodies import StrictJsonRequest


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route (its dependencies included) declares."""
    names = frozenset(param.alias for param in dependant.query_params)
    return names.union(*(_query_names(sub) for sub in dependant.dependencies))


class ResourceRoute(APIRoute):
    """Unknown query parameters are refused (422): ignored, each would still be a new
    response cache key (a flood of them evicts real entries) and a client's typo unsaid."""

    @cached_property
    def query_names(self) -> frozenset[str]:
        return _query_names(self.dependant)

    def refuse_unknown_query(self, request: Request) -> None:
        if not request.scope["query_string"]:  # most requests
            return
        if unknown := sorted(set(request.query_params) - self.query_names):
            takes = ", ".join(sorted(self.query_names)) or "none"
            raise RequestValidationError(
                [
                    {"loc": ("query", name), "msg": f"unknown query parameter (takes: {takes})"}
                    for name in unknown
                ]
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            self.refuse_unknown_query(request)
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return handle

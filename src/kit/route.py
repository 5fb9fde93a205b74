"""The route class of every resource: strict JSON bodies (src/kit/bodies.py) and no query
parameter the route does not declare. Checked in the route's handler, not as a dependency:
FastAPI solves a dependency on every request, this costs nothing without a query string.

A route that takes only the request and path or query values (a GET, most often) is called
directly: its values validated by FastAPI's own fields, without FastAPI's per-request
dependency solving (docs/performance.md); any other route goes through FastAPI as usual."""

import inspect
from collections.abc import Callable, Coroutine, Mapping
from copy import deepcopy
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from functools import cached_property
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import Json

from src.kit.bodies import StrictJsonRequest

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route (its dependencies included) declares."""
    names = frozenset(param.alias for param in dependant.query_params)
    return names.union(*(_query_names(sub) for sub in dependant.dependencies))


# Types whose query or path value is one string: FastAPI reads a list for sequence types.
SCALARS = (str, int, float, bool, Decimal, UUID, date, datetime, time, timedelta, Enum)


def _scalar_type(annotation: Any) -> bool:
    if annotation is type(None) or get_origin(annotation) is Literal:
        return True
    if get_origin(annotation) is Annotated:
        return _scalar_type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return all(_scalar_type(arg) for arg in get_args(annotation))
    return inspect.isclass(annotation) and issubclass(annotation, SCALARS)


def _scalar(field: Any) -> bool:
    """One value under its alias: what `direct_handler` validates exactly as FastAPI does."""
    info = field.field_info
    return (
        info.validation_alias in (None, field.alias)  # one name (no AliasChoices or paths)
        and not field.config  # no validate_by_name: FastAPI would try the name as well
        and not any(type(item) is Json for item in info.metadata)
        and _scalar_type(info.annotation)
    )


def direct_handler(route: APIRoute) -> Handler | None:
    """The route's endpoint called with its validated path and query values, or None when
    it takes anything else (a body, headers, dependencies...) or may answer other than a
    Response (FastAPI would serialize it)."""
    dependant, endpoint = route.dependant, route.endpoint
    if (  # a route's own `dependencies=[...]` are among dependant.dependencies
        dependant.dependencies
        or dependant.body_params
        or dependant.header_params
        or dependant.cookie_params
        or route.response_model is not None
        or not inspect.iscoroutinefunction(endpoint)
        or any(
            getattr(dependant, name) is not None
            for name in (
                "websocket_param_name",
                "http_connection_param_name",
                "response_param_name",
                "background_tasks_param_name",
                "security_scopes_param_name",
            )
        )
    ):
        return None
    try:
        returns = get_type_hints(endpoint).get("return")
    except Exception:  # a name only a type checker sees: FastAPI handles it as usual
        return None
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        return None
    fields = [("path", field) for field in dependant.path_params]
    fields += [("query", field) for field in dependant.query_params]
    if not all(_scalar(field) for _, field in fields):
        return None
    request_name, takes_query = dependant.request_param_name, bool(dependant.query_params)
    checks = [
        (where, field.name, field.alias, (where, field.alias), field) for where, field in fields
    ]

    async def handle(request: Request) -> Response:
        sources: dict[str, Mapping[str, Any]] = {"path": request.path_params}
        if takes_query:
            sources["query"] = request.query_params
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for where, name, alias, loc, field in checks:
            value = sources[where].get(alias)
            if value is None:  # absent: the default, as FastAPI gives it
                if field.field_info.is_required():
                    errors.append(
                        {"type": "missing", "loc": loc, "msg": "Field required", "input": None}
                    )
                    continue
                value = deepcopy(field.default)
                if not field.field_info.validate_default:
                    values[name] = value
                    continue
            valid, problems = field.validate(value, values, loc=loc)
            if problems:
                errors.extend(problems)
            else:
                values[name] = valid
        if errors:
            raise RequestValidationError(errors)
        if request_name is not None:
            values[request_name] = request
        return await endpoint(**values)

    return handle


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

    def get_route_handler(self) -> Handler:
        if (direct := direct_handler(self)) is not None:

            async def handle_directly(request: Request) -> Response:
                self.refuse_unknown_query(request)
                return await direct(request)

            return handle_directly
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            self.refuse_unknown_query(request)
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return handle

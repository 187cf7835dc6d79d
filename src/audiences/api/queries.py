"""Exact query strings: every operation refuses a query parameter it does not have.

FastAPI ignores query parameters an operation does not declare, so a misspelt ``fields`` or
``include`` on a single GET, or ``mdoe=replace`` on an import, would silently do something
else than asked. Every router depends on :data:`KnownQuery`, which answers 400 naming the
unknown parameters: ``unknown_filter`` on a list (where any other name would be a filter),
``unknown_parameter`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.params import Query
from fastapi.routing import APIRoute
from pydantic import BaseModel

from audiences.api.listing import COMMON
from audiences.errors import ErrorDetail, InvalidParameter
from audiences.schemas.common import ListParams


async def known_query_parameters(request: Request) -> None:
    """400 if the query string names a parameter the matched operation does not have."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.scope.get("query_string"):
        return
    allowed, filters = _query_names(route)
    unknown = sorted(set(request.query_params) - allowed)
    if not unknown:
        return
    names = ", ".join(unknown)
    if filters is not None:
        code = "unknown_filter"
        detail = f"unknown filter {names}; this list filters by {', '.join(sorted(filters))}"
    else:
        code = "unknown_parameter"
        known = ", ".join(sorted(allowed)) or "none"
        detail = f"unknown query parameter {names}; this operation takes {known}"
    raise InvalidParameter(
        detail,
        code=code,
        errors=[ErrorDetail(code, f"unknown parameter {n!r}", ("query", n)) for n in unknown],
    )


KnownQuery = Depends(known_query_parameters)


QueryNames = tuple[frozenset[str], frozenset[str] | None]
_known: dict[int, tuple[APIRoute, QueryNames]] = {}
"""Routes seen so far by id (an APIRoute is not hashable), each kept with its names."""


def _query_names(route: APIRoute) -> QueryNames:
    """The query parameters ``route`` takes, and its filters when it is a list (else None)."""
    seen = _known.get(id(route))
    if seen is None or seen[0] is not route:
        seen = _known[id(route)] = (route, _names_of(route))
    return seen[1]


def _names_of(route: APIRoute) -> QueryNames:
    names: set[str] = set()
    filters: frozenset[str] | None = None
    for field in _query_params(route.dependant):
        model = field.field_info.annotation
        if isinstance(field.field_info, Query) and _is_model(model):
            assert isinstance(model, type) and issubclass(model, BaseModel)
            fields = {info.alias or name for name, info in model.model_fields.items()}
            names |= fields
            if issubclass(model, ListParams):
                filters = frozenset(fields - COMMON)
        else:
            names.add(field.alias)
    return frozenset(names), filters


def _query_params(dependant: Dependant) -> Iterator[Any]:
    yield from dependant.query_params
    for dependency in dependant.dependencies:
        yield from _query_params(dependency)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)

"""The list conventions over HTTP: query parameters in, a page with a ``Link`` header out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from audiences.api import paths
from audiences.config import Settings
from audiences.errors import BadRequest, ErrorDetail, InvalidParameter, ValidationFailed
from audiences.schemas.common import ListParams, ListQuery, PageResult

COMMON = frozenset(ListParams.model_fields) - {"id"}
"""The parameters every list shares; the rest (``id`` included) are filters."""


def to_list_query(
    params: ListParams,
    settings: Settings,
    *,
    model: type[BaseModel],
    includes: Iterable[str] = (),
) -> ListQuery:
    """Check the parameters against this list's response model and limits; build the query."""
    limit = params.limit or settings.page_size_default
    if limit > settings.page_size_max:
        raise ValidationFailed(
            f"limit is at most {settings.page_size_max}",
            code="limit_out_of_range",
            errors=[ErrorDetail("limit_out_of_range", "too large", ("query", "limit"))],
        )
    if params.cursor is not None and params.offset is not None:
        raise BadRequest("use either cursor or offset, not both", code="cursor_with_offset")
    filters = {
        name: _filter_values(values) for name, values in params if name not in COMMON and values
    }
    return ListQuery(
        limit=limit,
        cursor=params.cursor,
        offset=params.offset,
        sort=params.sort,
        filters=filters,
        q=params.q,
        updated_since=params.updated_since,
        fields=parse_names(params.fields, "fields", frozenset(model.model_fields)),
        include=parse_names(params.include, "include", frozenset(includes)) or frozenset(),
    )


def _filter_values(values: Any) -> tuple[str, ...]:
    """A filter's values as text: a list filter's several, or a time filter's one (RFC 3339)."""
    if isinstance(values, datetime):
        return (values.isoformat(),)
    return tuple(values)


def page_response(
    request: Request,
    page: PageResult[Any],
    query: ListQuery,
    render: Callable[[Any], dict[str, Any]],
) -> JSONResponse:
    """The page as JSON, sparse fields applied, with ``Link: <…>; rel="next"`` when more follow."""
    items = [_sparse(render(item), query.fields) for item in page.items]
    body = {
        "data": items,
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
        "total": page.total,
    }
    headers = {}
    if page.next_cursor is not None:
        params = [
            (k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "offset")
        ]
        params.append(("cursor", page.next_cursor))
        next_url = paths.url_of(request).replace_query_params(**dict(params))
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse(body, headers=headers)


def parse_names(raw: str | None, parameter: str, allowed: frozenset[str]) -> frozenset[str] | None:
    """The comma-separated names in ``raw`` (``fields``, ``include``); 400 naming unknown ones."""
    if raw is None:
        return None
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(names - allowed)
    if unknown:
        raise InvalidParameter(
            f"unknown {parameter} entr{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}",
            code=f"unknown_{parameter}",
            errors=[
                ErrorDetail(f"unknown_{parameter}", f"unknown {n!r}", ("query", parameter))
                for n in unknown
            ],
        )
    return names


FIELDS_DOC = "Comma-separated fields to return (`id` always); all of them without it."


def sparse_one(body: dict[str, Any], raw: str | None, model: type[BaseModel]) -> dict[str, Any]:
    """One resource's body trimmed to ``fields=`` (a single GET's own ``fields``)."""
    return _sparse(body, parse_names(raw, "fields", frozenset(model.model_fields)))


def _sparse(item: dict[str, Any], fields: frozenset[str] | None) -> dict[str, Any]:
    if fields is None:
        return item
    return {key: value for key, value in item.items() if key in fields or key == "id"}

"""The list conventions as SQL: filters, search, ``updated_since``, sort and keyset cursors.

Every list in the API goes through :func:`paginate`, so every list behaves the same: stable
order (ties broken by id, in the direction of the sort), opaque cursors bound to their sort,
``offset`` for clients that page by position, and an exact ``total``. Every filter takes
several values, any of which matches (OR); every list filters by ``id`` and sorts by ``id``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from audiences.errors import ErrorDetail, InvalidParameter
from audiences.kit.cursors import CursorError, decode_cursor, encode_cursor
from audiences.schemas.common import ListQuery, PageResult

FilterFn = Callable[[str], ColumnElement[bool]]
"""One value of a filter as a condition; a filter's several values are ORed."""


def equals(column: Any) -> FilterFn:
    """A filter matching ``column`` exactly."""

    def condition(value: str) -> ColumnElement[bool]:
        result: ColumnElement[bool] = column == value
        return result

    return condition


def enum_filter(column: Any, allowed: type[Any]) -> FilterFn:
    """A filter on ``column`` whose values must be members of the enum ``allowed``."""
    exact = equals(column)

    def condition(value: str) -> ColumnElement[bool]:
        if value not in {member.value for member in allowed}:
            raise ValueError(f"{value!r} is not one of {', '.join(m.value for m in allowed)}")
        return exact(value)

    return condition


@dataclass(frozen=True)
class ListSpec:
    """What one resource's list allows: filters by name, sortable attributes, searched columns.

    ``id`` is a filter and a sort of every list without being named here.
    """

    id_column: InstrumentedAttribute[str]
    updated_column: InstrumentedAttribute[datetime]
    sorts: Mapping[str, InstrumentedAttribute[Any]]
    default_sort: str
    filters: Mapping[str, FilterFn] = field(default_factory=dict)
    search: tuple[InstrumentedAttribute[Any], ...] = ()


def paginate(
    session: Session, stmt: Select[Any], spec: ListSpec, query: ListQuery
) -> PageResult[Any]:
    """Run ``stmt`` (a select of one entity, already scoped) under the list conventions."""
    stmt = _filtered(stmt, spec, query)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    sort_name, descending = _parse_sort(spec, query.sort)
    column = _sorts(spec)[sort_name]
    if query.cursor is not None:
        stmt = stmt.where(_after_cursor(spec, column, descending, query))
    order = (column.desc(), spec.id_column.desc()) if descending else (column, spec.id_column)
    stmt = stmt.order_by(*order).limit(query.limit + 1)
    if query.offset:
        stmt = stmt.offset(query.offset)
    rows = list(session.scalars(stmt).unique())
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = _cursor_for(rows[-1], sort_name, descending, column, spec) if has_more else None
    return PageResult(items=rows, has_more=has_more, next_cursor=next_cursor, total=total)


def _sorts(spec: ListSpec) -> Mapping[str, InstrumentedAttribute[Any]]:
    return {**spec.sorts, "id": spec.id_column}


def _filters(spec: ListSpec) -> Mapping[str, FilterFn]:
    id_column = spec.id_column
    return {**spec.filters, "id": lambda value: id_column == value}


def _filtered(stmt: Select[Any], spec: ListSpec, query: ListQuery) -> Select[Any]:
    filters = _filters(spec)
    unknown = sorted(set(query.filters) - set(filters))
    if unknown:
        raise InvalidParameter(
            f"unknown filter {', '.join(unknown)}; allowed: {', '.join(sorted(filters))}",
            code="unknown_filter",
            errors=[
                ErrorDetail("unknown_filter", f"unknown filter {n!r}", ("query", n))
                for n in unknown
            ],
        )
    for name, values in query.filters.items():
        try:
            stmt = stmt.where(or_(*(filters[name](value) for value in values)))
        except ValueError as exc:
            raise InvalidParameter(
                f"invalid value for filter {name}: {exc}",
                errors=[ErrorDetail("invalid_filter_value", str(exc), ("query", name))],
            ) from exc
    if query.q:
        needle = query.q.lower()
        stmt = stmt.where(
            or_(*(func.lower(col).contains(needle, autoescape=True) for col in spec.search))
        )
    if query.updated_since is not None:
        stmt = stmt.where(spec.updated_column >= query.updated_since)
    return stmt


def _parse_sort(spec: ListSpec, raw: str | None) -> tuple[str, bool]:
    value = raw or spec.default_sort
    descending = value.startswith("-")
    name = value.removeprefix("-")
    if name not in _sorts(spec):
        raise InvalidParameter(
            f"cannot sort by {name!r}; allowed: {', '.join(sorted(_sorts(spec)))}",
            code="unknown_sort_field",
            errors=[
                ErrorDetail("unknown_sort_field", f"cannot sort by {name!r}", ("query", "sort"))
            ],
        )
    return name, descending


def _after_cursor(
    spec: ListSpec, column: InstrumentedAttribute[Any], descending: bool, query: ListQuery
) -> Any:
    assert query.cursor is not None
    sort = ("-" if descending else "") + _parse_sort(spec, query.sort)[0]
    try:
        payload = decode_cursor(query.cursor)
        if payload.get("s") != sort:
            raise CursorError("cursor was issued for another sort order")
        value = _decode_value(payload["v"])
        last_id = str(payload["i"])
    except (CursorError, KeyError, TypeError, ValueError) as exc:
        raise InvalidParameter(
            f"invalid cursor: {exc}" if isinstance(exc, CursorError) else "invalid cursor",
            code="invalid_cursor",
            errors=[
                ErrorDetail("invalid_cursor", "not a cursor from this list", ("query", "cursor"))
            ],
        ) from exc
    if descending:
        return or_(column < value, and_(column == value, spec.id_column < last_id))
    return or_(column > value, and_(column == value, spec.id_column > last_id))


def _cursor_for(
    row: Any, sort_name: str, descending: bool, column: InstrumentedAttribute[Any], spec: ListSpec
) -> str:
    value = getattr(row, column.key)
    return encode_cursor(
        {"s": ("-" if descending else "") + sort_name, "v": _encode_value(value), "i": row.id}
    )


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return datetime.fromisoformat(value["dt"])
    if isinstance(value, list):
        raise ValueError("malformed cursor value")
    return value

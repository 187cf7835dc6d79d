"""Explain for behavioural conditions: the window an aggregate reads, resolved to instants, and
the events it counted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from audiences.rules.dialect import Aggregate, EventField, chain
from audiences.rules.event_semantics import time_of
from audiences.schemas.events import Event

MAX_SHOWN = 5
"""Events shown per behavioural condition (the latest ones); ``total`` counts them all."""

_LOWER = {exp.GTE: True, exp.GT: False}
_UPPER = {exp.LTE: True, exp.LT: False}
_FLIPPED = {exp.GTE: exp.LTE, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.LT: exp.GT}


@dataclass(frozen=True)
class Bound:
    """One end of a window: ``timestamp >= node`` (``lower``), ``included`` or not."""

    owner: int
    node: exp.Expr
    lower: bool
    included: bool


def window_bounds(node: exp.Expr) -> list[Bound]:
    """The bounds on ``timestamp`` among the top-level conditions of the node's filter."""
    where = node.args.get("where")
    found: list[Bound] = []
    for item in chain(where.unnest()) if isinstance(where, exp.And) else [where]:
        item = item.unnest() if item is not None else None
        if isinstance(item, exp.Between) and _is_time(item.this):
            found += [Bound(id(node), item.args["low"], True, True)]
            found += [Bound(id(node), item.args["high"], False, True)]
            continue
        kind = type(item)
        if kind not in _FLIPPED or item is None:
            continue
        this, other = item.this, item.expression
        if _is_time(other) and not _is_time(this):
            this, other, kind = other, this, _FLIPPED[kind]
        if _is_time(this) and other.find(EventField) is None:
            lower = kind in _LOWER
            included = (_LOWER if lower else _UPPER)[kind]
            found.append(Bound(id(node), other, lower, included))
    return found


def _is_time(node: exp.Expr) -> bool:
    return isinstance(node, EventField) and node.name == "timestamp"


def behaviour(
    node: exp.Expr,
    value: Any,
    counted: Sequence[Event],
    bounds: Sequence[Bound],
    limits: Mapping[int, Any],
) -> dict[str, Any]:
    """What explain shows for one aggregate or sequence (``explain.json_value`` makes it JSON)."""
    mine = [bound for bound in bounds if bound.owner == id(node)]
    described: dict[str, Any] = {
        "kind": node.name if isinstance(node, Aggregate) else "sequence",
        "value": value,
        "window": _window(mine, limits),
        "events": [_event(event) for event in sorted(counted, key=time_of)[-MAX_SHOWN:][::-1]],
        "total": len(counted),
    }
    return described


def _window(bounds: Sequence[Bound], limits: Mapping[int, Any]) -> dict[str, Any]:
    window: dict[str, Any] = {"from": None, "from_included": None, "to": None, "to_included": None}
    for bound in bounds:
        moment = limits.get(id(bound))
        end = "from" if bound.lower else "to"
        current = window[end]
        tighter = current is None or (moment > current if bound.lower else moment < current)
        if moment is not None and tighter:
            window[end], window[f"{end}_included"] = moment, bound.included
    return window


def _event(event: Event) -> dict[str, Any]:
    return {"event": event.name, "timestamp": time_of(event), "properties": event.properties}

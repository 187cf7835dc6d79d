"""Condition operators of the JSON form: how each builds a tree and recognises it again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from audiences.rules import dialect as d


@dataclass(frozen=True)
class Op:
    """One condition operator: how it builds a tree, and how to recognise that tree again."""

    build: Callable[[exp.Expr, Any], exp.Expr]
    match: Callable[[exp.Expr], tuple[exp.Expr, Any] | None]
    values: bool = False
    """Takes a ``values`` list rather than one ``value``."""
    field: bool = True


def _binary(cls: type[exp.Expr]) -> Op:
    def match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
        if type(node) is cls and isinstance(node.this, d.Attr) and is_value(node.expression):
            return node.this, node.expression
        return None

    return Op(lambda f, v: cls(this=f, expression=v), match)


def _negated(op: Op) -> Op:
    def match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
        return op.match(node.this) if isinstance(node, exp.Not) else None

    return Op(lambda f, v: exp.Not(this=op.build(f, v)), match, op.values, op.field)


def _in_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    simple = isinstance(node, exp.In) and isinstance(node.this, d.Attr)
    if simple and all(is_value(v) for v in node.expressions):
        return node.this, node.expressions
    return None


def _between_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    if isinstance(node, exp.Between) and isinstance(node.this, d.Attr):
        low, high = node.args["low"], node.args["high"]
        if is_value(low) and is_value(high):
            return node.this, [low, high]
    return None


def _list_match(cls: type[exp.Expr]) -> Callable[[exp.Expr], Any]:
    def match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
        values = node.expression
        if type(node) is cls and isinstance(node.this, d.Attr) and isinstance(values, exp.Array):
            return node.this, values.expressions
        return None

    return match


def _null_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    if isinstance(node, exp.Is) and isinstance(node.this, d.Attr):
        return (node.this, None) if isinstance(node.expression, exp.Null) else None
    return None


def _within_last(f: exp.Expr, days: exp.Expr) -> exp.Expr:
    interval = exp.Interval(this=days, unit=exp.var("DAY"))
    return exp.GTE(this=f, expression=exp.Sub(this=exp.CurrentTimestamp(), expression=interval))


def _within_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    if not (isinstance(node, exp.GTE) and isinstance(node.this, d.Attr)):
        return None
    moved = node.expression
    if isinstance(moved, exp.Sub) and isinstance(moved.this, exp.CurrentTimestamp):
        interval = moved.expression
        if isinstance(interval, exp.Interval) and interval.unit and interval.unit.name == "DAY":
            return node.this, interval.this
    return None


def _audience_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    return (node, node.this) if isinstance(node, d.InAudience) else None


def _true_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    return (node, None) if isinstance(node, d.Attr) else None


def _array(values: list[exp.Expr]) -> exp.Expr:
    return exp.Array(expressions=values)


_IN = Op(lambda f, v: exp.In(this=f, expressions=v), _in_match, values=True)
_CONTAINS = _binary(d.Contains)
_LIKE = _binary(exp.Like)
_NULL = Op(lambda f, v: exp.Is(this=f, expression=exp.Null()), _null_match)
_TRUE = Op(lambda f, v: f, _true_match)
_AUDIENCE = Op(lambda f, v: d.InAudience(this=v), _audience_match, field=False)

OPS: dict[str, Op] = {
    "equals": _binary(exp.EQ),
    "not_equals": _binary(exp.NEQ),
    "gt": _binary(exp.GT),
    "gte": _binary(exp.GTE),
    "lt": _binary(exp.LT),
    "lte": _binary(exp.LTE),
    "in": _IN,
    "not_in": _negated(_IN),
    "between": Op(
        lambda f, v: exp.Between(this=f, low=v[0], high=v[1]), _between_match, values=True
    ),
    "contains": _CONTAINS,
    "not_contains": _negated(_CONTAINS),
    "starts_with": _binary(d.StartsWith),
    "ends_with": _binary(d.EndsWith),
    "like": _LIKE,
    "not_like": _negated(_LIKE),
    "ilike": _binary(exp.ILike),
    "matches": _binary(d.RegexpMatches),
    "is_null": _NULL,
    "is_not_null": _negated(_NULL),
    "is_true": _TRUE,
    "is_false": _negated(_TRUE),
    "list_contains": _binary(d.ListContains),
    "has_any": Op(
        lambda f, v: d.ListHasAny(this=f, expression=_array(v)),
        _list_match(d.ListHasAny),
        values=True,
    ),
    "has_all": Op(
        lambda f, v: d.ListHasAll(this=f, expression=_array(v)),
        _list_match(d.ListHasAll),
        values=True,
    ),
    "within_last": Op(_within_last, _within_match),
    "in_audience": _AUDIENCE,
    "not_in_audience": _negated(_AUDIENCE),
}
"""Condition operators of the JSON form, by name; tried in this order when rendering."""
NO_VALUE = {"is_null", "is_not_null", "is_true", "is_false"}


def is_value(node: exp.Expr) -> bool:
    """A literal that a condition can carry as its JSON value."""
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    if isinstance(node, exp.Cast):
        return isinstance(node.this, exp.Literal)
    return isinstance(node, exp.Literal | exp.Boolean)

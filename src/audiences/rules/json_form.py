"""The JSON tree form: ``all`` / ``any`` / ``none`` groups of ``{field, op, value}`` conditions.

It builds the same sqlglot tree as the text form. Every tree has a JSON form: a condition no
operator describes becomes a raw leaf ``{"expr": "age + 1 > 30"}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import dialect as d
from audiences.rules.dialect import render
from audiences.rules.normalize import MAX_EXACT, parenthesize
from audiences.rules.problems import JSON_PATH

Path = tuple[str | int, ...]
Json = Any
GROUPS = {"all": exp.And, "any": exp.Or}


class JsonProblem(Exception):
    """A malformed piece of a JSON rule, at a JSON path."""

    def __init__(self, code: str, message: str, path: Path, suggestion: str | None = None):
        super().__init__(message)
        self.detail = ErrorDetail(code, message, location=path, suggestion=suggestion)


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
        if type(node) is cls and isinstance(node.this, d.Attr) and _is_value(node.expression):
            return node.this, node.expression
        return None

    return Op(lambda f, v: cls(this=f, expression=v), match)


def _negated(op: Op) -> Op:
    def match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
        return op.match(node.this) if isinstance(node, exp.Not) else None

    return Op(lambda f, v: exp.Not(this=op.build(f, v)), match, op.values, op.field)


def _in_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    simple = isinstance(node, exp.In) and isinstance(node.this, d.Attr)
    if simple and all(_is_value(v) for v in node.expressions):
        return node.this, node.expressions
    return None


def _between_match(node: exp.Expr) -> tuple[exp.Expr, Any] | None:
    if isinstance(node, exp.Between) and isinstance(node.this, d.Attr):
        low, high = node.args["low"], node.args["high"]
        if _is_value(low) and _is_value(high):
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
_NO_VALUE = {"is_null", "is_not_null", "is_true", "is_false"}


# --- tree -> JSON -------------------------------------------------------------------------


def to_json(node: exp.Expr, schema: Mapping[str, str] | None = None) -> dict[str, Json]:
    """The JSON form of a tree: groups for AND / OR / NOT, conditions, raw leaves.

    >>> from audiences.rules import parse_rule
    >>> to_json(parse_rule("country = 'US' AND NOT churned").tree)["all"]
    [{'field': 'country', 'op': 'equals', 'value': 'US'}, {'field': 'churned', 'op': 'is_false'}]
    """
    if isinstance(node, exp.Paren):
        return to_json(node.this, schema)
    if isinstance(node, exp.And | exp.Or):
        key = "all" if isinstance(node, exp.And) else "any"
        return {key: [to_json(item, schema) for item in _chain(node)]}
    leaf = _leaf(node, schema or {})
    if leaf is not None:
        return leaf
    if isinstance(node, exp.Not):
        inner = node.this
        if isinstance(inner, exp.Paren) and isinstance(inner.this, exp.Or):
            return {"none": [to_json(item, schema) for item in _chain(inner.this)]}
        return {"none": [to_json(inner, schema)]}
    return {"expr": render(node)}


def _chain(node: exp.Expr) -> list[exp.Expr]:
    """Operands of a left-deep chain of one connective (a parenthesised one is a nested group)."""
    kind, items = type(node), []
    while type(node) is kind:
        items.append(node.expression)
        node = node.this
    items.append(node)
    return items[::-1]


def _leaf(node: exp.Expr, schema: Mapping[str, str]) -> dict[str, Json] | None:
    for name, op in OPS.items():
        found = op.match(node)
        if found is None:
            continue
        target, value = found
        values = value if op.values else [value]
        if not all(_plain(target, v, schema) for v in values):
            return None
        leaf: dict[str, Json] = {"field": target.name} if op.field else {}
        leaf["op"] = name
        if op.values:
            leaf["values"] = [_value(v) for v in value]
        elif name not in _NO_VALUE:
            leaf["value"] = _value(value)
        return leaf
    return None


_TYPED = {exp.DType.DATE: "date", exp.DType.TIMESTAMPTZ: "timestamp"}


def _plain(target: exp.Expr, value: Any, schema: Mapping[str, str]) -> bool:
    """A typed literal is written as plain text only where validation will type it back:
    against an attribute declared with that very type."""
    if not isinstance(value, exp.Cast):
        return True
    return str(schema.get(target.name, "")) == _TYPED.get(value.to.this)


def _is_value(node: exp.Expr) -> bool:
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    if isinstance(node, exp.Cast):
        return isinstance(node.this, exp.Literal)
    return isinstance(node, exp.Literal | exp.Boolean)


def _value(node: exp.Expr) -> Json:
    if isinstance(node, exp.Neg):
        return -_value(node.this)
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Cast):
        return node.this.name
    assert isinstance(node, exp.Literal)
    if node.is_string:
        return node.name
    return int(node.this) if node.this.lstrip("-").isdigit() else float(node.this)


# --- JSON -> tree -------------------------------------------------------------------------


def from_json(
    data: Json, max_depth: int, max_nodes: int
) -> tuple[exp.Expr | None, list[ErrorDetail]]:
    """Build the tree of a JSON rule, or report what is malformed (with JSON paths)."""
    builder = _Builder(max_depth, max_nodes)
    try:
        tree = builder.node(data, (), 1)
    except JsonProblem as problem:
        return None, [problem.detail, *builder.problems]
    if builder.problems:
        return None, builder.problems
    return parenthesize(tree), []


class _Builder:
    def __init__(self, max_depth: int, max_nodes: int) -> None:
        self.max_depth, self.max_nodes, self.count = max_depth, max_nodes, 0
        self.problems: list[ErrorDetail] = []

    def node(self, data: Json, path: Path, depth: int) -> exp.Expr:
        self.count += 1
        if depth > self.max_depth:
            raise JsonProblem("rule_too_deep", f"Groups nest deeper than {self.max_depth}.", path)
        if self.count > self.max_nodes:
            raise JsonProblem("rule_too_large", f"More than {self.max_nodes} conditions.", path)
        if not isinstance(data, Mapping):
            raise JsonProblem("rule_syntax", "Expected an object (a group or a condition).", path)
        groups = [key for key in ("all", "any", "none") if key in data]
        if groups:
            return self.group(data, groups, path, depth)
        if "expr" in data:
            return self.raw(data, path)
        return _tag(self.condition(data, path), path)

    def group(self, data: Mapping[str, Json], keys: list[str], path: Path, depth: int) -> exp.Expr:
        if len(keys) != 1 or len(data) != 1:
            raise JsonProblem("rule_syntax", "A group has exactly one of all, any, none.", path)
        key = keys[0]
        items = data[key]
        if not isinstance(items, Sequence) or isinstance(items, str) or not items:
            raise JsonProblem("rule_syntax", f"'{key}' needs a non-empty list.", (*path, key))
        built = []
        for index, item in enumerate(items):
            try:
                built.append(self.node(item, (*path, key, index), depth + 1))
            except JsonProblem as problem:
                if problem.detail.code in ("rule_too_deep", "rule_too_large"):
                    raise
                self.problems.append(problem.detail)
        if len(built) != len(items):
            return exp.Null()
        if len(built) == 1 and key != "none":
            return built[0]
        if key == "none":
            inner = _connect(exp.Or, built) if len(built) > 1 else _grouped(built[0])
            return _tag(exp.Not(this=inner), path)
        return _tag(_connect(GROUPS[key], built), path)

    def raw(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        from audiences.rules.parse import parse_tree
        from audiences.rules.rule import RuleLimits

        text = data["expr"]
        if len(data) != 1 or not isinstance(text, str):
            raise JsonProblem("rule_syntax", 'A raw leaf is {"expr": "<rule text>"}.', path)
        tree, problems = parse_tree(text, RuleLimits(max_depth=self.max_depth))
        located = (*path, "expr")
        self.problems.extend(
            ErrorDetail(p.code, p.message, located, p.start, p.end, p.line, p.col, p.suggestion)
            for p in problems
        )
        if tree is None:
            raise JsonProblem("rule_syntax", "The raw expression does not parse.", located)
        return _tag(tree, path)

    def condition(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        name = data.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None:
            from audiences.rules.problems import did_you_mean

            guess = did_you_mean(str(name), OPS)
            message = f"Unknown operator {name!r}." + (f" Did you mean {guess!r}?" if guess else "")
            raise JsonProblem("rule_unknown_operator", message, (*path, "op"), guess)
        allowed = {"op", "field"} if op.field else {"op"}
        allowed |= {"values"} if op.values else ({"value"} if name not in _NO_VALUE else set())
        extra = set(data) - allowed
        if extra:
            message = f"Operator {name!r} takes {sorted(allowed)}, not {sorted(extra)}."
            raise JsonProblem("rule_wrong_arity", message, (*path, sorted(extra)[0]))
        field = self.field(data, path) if op.field else exp.Null()
        return op.build(field, self.argument(data, op, str(name), path))

    def field(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        field = data.get("field")
        if not isinstance(field, str) or not field or len(field) > 256:
            raise JsonProblem("rule_syntax", "'field' must be an attribute name.", (*path, "field"))
        return _tag(d.Attr(this=field), (*path, "field"))

    def argument(self, data: Mapping[str, Json], op: Op, name: str, path: Path) -> Any:
        if name in _NO_VALUE:
            return None
        if not op.values:
            if "value" not in data:
                raise JsonProblem("rule_wrong_arity", f"{name!r} needs a 'value'.", path)
            return literal(data["value"], (*path, "value"))
        values = data.get("values")
        if not isinstance(values, list) or not values:
            raise JsonProblem(
                "rule_wrong_arity", f"{name!r} needs a non-empty 'values' list.", (*path, "values")
            )
        if name == "between" and len(values) != 2:
            raise JsonProblem(
                "rule_wrong_arity", "'between' needs 'values': [low, high].", (*path, "values")
            )
        return [literal(v, (*path, "values", i)) for i, v in enumerate(values)]


def literal(value: Json, path: Path) -> exp.Expr:
    """A JSON scalar as a literal node (refusing null, containers, NaN and huge numbers)."""
    if isinstance(value, bool):
        return _tag(exp.Boolean(this=value), path)
    if isinstance(value, str):
        return _tag(exp.Literal.string(value), path)
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_EXACT:
            raise JsonProblem(
                "rule_bad_number", f"{value!r} is not a usable number (limit ±2^53).", path
            )
        spelled = str(abs(value)) if isinstance(value, int) else repr(abs(value))
        number = _tag(exp.Literal.number(spelled), path)
        return _tag(exp.Neg(this=number), path) if value < 0 or repr(value) == "-0.0" else number
    kind = "null (use is_null)" if value is None else type(value).__name__
    raise JsonProblem(
        "rule_type_mismatch", f"A value must be text, a number or a boolean, not {kind}.", path
    )


def _tag(node: exp.Expr, path: Path) -> exp.Expr:
    node.meta[JSON_PATH] = path
    return node


def _grouped(node: exp.Expr) -> exp.Expr:
    return exp.Paren(this=node) if isinstance(node, exp.Connector) else node


def _connect(cls: type[exp.Expr], items: list[exp.Expr]) -> exp.Expr:
    tree = _grouped(items[0])
    for item in items[1:]:
        tree = cls(this=tree, expression=_grouped(item))
    return tree

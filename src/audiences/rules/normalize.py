"""Tree normalisation: one canonical tree per rule, whatever spelling or form it came from."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import behaviour
from audiences.rules.diagnostics import on
from audiences.rules.dialect import Attr

MAX_EXACT = 2**53
"""Largest magnitude a number literal may have: exact in every back end and in JSON."""


def usable_number(value: float) -> bool:
    """Whether a number literal is finite and within ±2^53 (an integer of any size is
    compared as an integer: as a float, one of 309 digits or more overflows).

    >>> usable_number(2**53), usable_number(10**400), usable_number(float("nan"))
    (True, False, False)
    """
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return abs(value) <= MAX_EXACT


INTERVAL_UNITS = ("YEAR", "MONTH", "WEEK", "DAY", "HOUR", "MINUTE", "SECOND")

TIME_TYPES = {
    exp.DType.TIMESTAMP: exp.DType.TIMESTAMPTZ,
    exp.DType.TIMESTAMPTZ: exp.DType.TIMESTAMPTZ,
    exp.DType.TIMESTAMPNTZ: exp.DType.TIMESTAMPTZ,
    exp.DType.DATETIME: exp.DType.TIMESTAMPTZ,
    exp.DType.DATE: exp.DType.DATE,
}

# Binding strength, weakest first; a child binding weaker than its parent needs parentheses.
PRECEDENCE: dict[type[exp.Expr], int] = {
    exp.Or: 1,
    exp.And: 2,
    exp.Not: 3,
    **dict.fromkeys((exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is), 4),
    **dict.fromkeys((exp.In, exp.Like, exp.ILike, exp.Between), 4),
    **dict.fromkeys((exp.Add, exp.Sub), 5),
    **dict.fromkeys((exp.Mul, exp.Div, exp.Mod), 6),
    exp.Neg: 7,
    exp.Collate: 8,
}
COMPARISON = 4


def normalize(tree: exp.Expr, text: str | None) -> tuple[exp.Expr, list[ErrorDetail]]:
    """Rewrite a parsed tree into canonical shape and report literals that cannot be used.

    Names become ``Attr`` paths, numbers and typed literals get one spelling, ``NOT LIKE``
    becomes a ``NOT`` node, comments and redundant parentheses go away.
    """
    problems: list[ErrorDetail] = []
    # Children before parents, so a rewritten parent is built from rewritten children.
    for node in reversed(list(tree.walk(bfs=False))):
        node.comments = None
        replacement = _rewrite(node, text, problems)
        if replacement is not node:
            tree = replacement if node is tree else tree
            node.replace(replacement)
    return parenthesize(_strip_top(tree)), problems


def _rewrite(node: exp.Expr, text: str | None, problems: list[ErrorDetail]) -> exp.Expr:
    if isinstance(node, exp.Column | exp.Dot):
        return _attr(node)
    if isinstance(node, exp.Anonymous) and node.name.lower() in (*behaviour.AGGREGATES, "sequence"):
        return behaviour.from_call(node, text, problems)
    if isinstance(node, exp.Filter):
        return behaviour.with_filter(node)
    if isinstance(node, exp.Literal) and not node.is_string:
        return _number(node, text, problems)
    if isinstance(node, exp.Like | exp.ILike) and node.args.get("negate"):
        positive = node.copy()
        positive.set("negate", None)
        return exp.Not(this=positive)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and node.this.this == "0":
        return node.this  # -0 is 0 (but -0.0 stays: JSON and floats keep its sign)
    if isinstance(node, exp.Interval):
        return _interval(node, text, problems)
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        return _typed_literal(node, text, problems)
    if isinstance(node, exp.Cast) and node.to.this in TIME_TYPES:
        node.set("to", exp.DataType.build(TIME_TYPES[node.to.this]))
    if isinstance(node, exp.Escape) and node.expression.name == "\\":
        like: exp.Expr = node.this
        return like
    return node


def _attr(node: exp.Column | exp.Dot) -> exp.Expr:
    parts = _parts(node)
    if parts is None:
        return node
    attr = Attr(this=".".join(p.name if p.args.get("quoted") else p.name.lower() for p in parts))
    attr._meta = _merged_meta(node)
    return attr


def _parts(node: exp.Expr) -> list[exp.Expr] | None:
    if isinstance(node, Attr):
        return [exp.to_identifier(part, quoted=True) for part in node.name.split(".")]
    if isinstance(node, exp.Dot):
        head = _parts(node.this)
        tail = node.expression
        return None if head is None or not isinstance(tail, exp.Identifier) else [*head, tail]
    if isinstance(node, exp.Column):
        parts = node.parts
        return parts if all(isinstance(p, exp.Identifier) for p in parts) else None
    return None


def _merged_meta(node: exp.Expr) -> dict[str, int] | None:
    metas = [sub._meta for sub in node.walk() if sub._meta and "start" in sub._meta]
    if not metas:
        return None
    first = min(metas, key=lambda m: m["start"])
    return {**first, "end": max(m["end"] for m in metas)}


def _number(node: exp.Literal, text: str | None, problems: list[ErrorDetail]) -> exp.Expr:
    raw = node.this
    try:
        value: float = int(raw)
    except ValueError:
        value = float(raw)
    if not usable_number(value):
        message = f"The number {raw} is too large; numbers must lie within ±2^53."
        problems.append(on("rule_bad_number", message, node, text))
        return node
    spelled = str(value) if isinstance(value, int) else repr(value)
    literal = exp.Literal.number(spelled)
    literal._meta = node._meta
    return literal


def _interval(node: exp.Interval, text: str | None, problems: list[ErrorDetail]) -> exp.Expr:
    unit = (node.unit.name if node.unit else "").upper().removesuffix("S")
    value = node.this
    negative = isinstance(value, exp.Neg)
    raw = (value.this if negative else value).name if value is not None else ""
    amount = ("-" if negative else "") + raw.strip()
    if unit not in INTERVAL_UNITS or not amount.lstrip("-").isdigit() or len(amount) > 7:
        message = f"INTERVAL needs a whole number and one of {', '.join(INTERVAL_UNITS)}."
        problems.append(on("rule_bad_literal", message, node, text))
        return node
    result = exp.Interval(this=exp.Literal.number(int(amount)), unit=exp.var(unit))
    result._meta = _merged_meta(node)
    return result


def _typed_literal(node: exp.Cast, text: str | None, problems: list[ErrorDetail]) -> exp.Expr:
    kind = TIME_TYPES.get(node.to.this)
    if kind is None:
        return node
    try:
        spelled = format_time(node.this.name, kind)
    except ValueError:
        label = "date" if kind is exp.DType.DATE else "timestamp"
        message = f"{node.this.name!r} is not a valid {label} (use ISO 8601)."
        problems.append(on("rule_bad_literal", message, node, text))
        return node
    result = exp.Cast(this=exp.Literal.string(spelled), to=exp.DataType.build(kind))
    result._meta = _merged_meta(node)
    return result


def format_time(value: str, kind: exp.DType) -> str:
    """The canonical spelling of a date or timestamp literal: ISO 8601, timestamps in UTC.

    >>> format_time("2024-01-31 23:00-02:00", exp.DType.TIMESTAMPTZ)
    '2024-02-01 01:00:00+00:00'
    """
    if kind is exp.DType.DATE:
        return date.fromisoformat(value.strip()).isoformat()
    moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(sep=" ")


def _strip_top(tree: exp.Expr) -> exp.Expr:
    while isinstance(tree, exp.Paren):
        tree = tree.this.pop()
    return tree


def parenthesize(tree: exp.Expr) -> exp.Expr:
    """Keep parentheses only where they mean something and add the ones precedence needs.

    A parenthesised AND/OR group inside another connective is kept: it is the user's grouping
    (a nested group in the JSON form). Any other parenthesis is dropped and then put back only
    where the printed text would otherwise parse differently.
    """
    for node in list(tree.walk(bfs=False)):
        if isinstance(node, exp.Paren) and not _meaningful(node):
            node.replace(node.this)
    for node in list(tree.walk(bfs=False)):
        if node.parent is not None and needs_parens(node):
            paren = exp.Paren()
            node.replace(paren)
            paren.set("this", node)
    return tree


def _meaningful(paren: exp.Paren) -> bool:
    inner, parent = paren.this, paren.parent
    return isinstance(inner, exp.Connector) and isinstance(parent, exp.Connector | exp.Not)


def needs_parens(node: exp.Expr) -> bool:
    """Whether a node printed inside its parent needs parentheses to keep its meaning."""
    parent = node.parent
    if parent is None or isinstance(parent, exp.Escape):
        return False
    mine, theirs = PRECEDENCE.get(type(node)), PRECEDENCE.get(type(parent))
    if mine is None or theirs is None:
        return False
    if isinstance(parent, exp.Between):
        return mine <= COMPARISON
    if mine != theirs:
        return mine < theirs
    if mine == COMPARISON:
        return True
    return node.arg_key == "expression" and isinstance(node, exp.Binary)

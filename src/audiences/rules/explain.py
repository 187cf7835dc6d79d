"""Explain: evaluate a rule on one profile and show every node's value, so a client sees why."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlglot import exp

from audiences.rules import sql_semantics
from audiences.rules.dialect import Attr, chain, render
from audiences.rules.literals import NOT_CONSTANT, constant
from audiences.rules.rule import Rule
from audiences.rules.to_python import AudienceCheck, Codegen, compile_function, no_audience

_SKIP = (exp.Paren, exp.DataType, exp.Var)


def explain(
    rule: Rule,
    profile: Mapping[str, Any],
    *,
    audience: AudienceCheck = no_audience,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Why a profile is (not) a member: the rule tree with each node's value, JSON-ready.

    Each node has its canonical ``text``, its ``value`` (``true``/``false``/``null`` for
    conditions) and its ``children``; ``attributes`` lists the values the rule read.

    >>> from audiences.rules import parse_rule
    >>> result = explain(parse_rule("age >= 30 AND plan = 'pro'"), {"age": 31})
    >>> result["member"], result["value"], [c["value"] for c in result["tree"]["children"]]
    (False, None, [True, None])
    """
    nodes = [node for node in rule.tree.walk(bfs=False) if node is rule.tree or _shown(node)]
    gen = Codegen(rule)
    body = "(" + "".join(f"{gen.value(node)}, " for node in nodes) + ")"
    moment = now or sql_semantics.now_utc()
    values = compile_function(gen, body, audience, lambda: moment)(profile)
    by_node = {id(node): value for node, value in zip(nodes, values, strict=True)}
    root = _describe(rule.tree, by_node)
    return {
        "member": root["value"] is True,
        "value": root["value"],
        "text": rule.text,
        "tree": root,
        "attributes": {a.name: json_value(by_node[id(a)]) for a in rule.tree.find_all(Attr)},
    }


def _shown(node: exp.Expr) -> bool:
    return not isinstance(node, _SKIP) and constant(node) is NOT_CONSTANT


def _describe(node: exp.Expr, values: Mapping[int, Any]) -> dict[str, Any]:
    while isinstance(node, exp.Paren):
        node = node.this
    children = [
        _describe(child, values)
        for child in _children(node)
        if id(child) in values or isinstance(child, exp.Paren)
    ]
    described: dict[str, Any] = {"text": render(node), "value": json_value(values.get(id(node)))}
    if isinstance(node, Attr):
        described["attribute"] = node.name
    if children:
        described["children"] = children
    return described


def _children(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Connector):
        return chain(node)
    return list(node.iter_expressions())


def json_value(value: Any) -> Any:
    """A value as JSON can carry it: times as ISO 8601, sets and tuples as lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | frozenset | set):
        items = [json_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)

"""Explain: evaluate a rule on one profile and show every node's value, so a client sees why."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlglot import exp

from audiences.rules import sql_semantics
from audiences.rules.behaviour import BEHAVIOURAL, inside
from audiences.rules.behaviour_python import matching
from audiences.rules.dialect import Attr, chain, render
from audiences.rules.explain_events import behaviour, window_bounds
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
    conditions) and its ``children``; ``attributes`` lists the values the rule read. An
    aggregate or sequence also has ``behaviour``: its window resolved to instants and the events
    that counted (the latest five, with their ``total``).

    >>> from audiences.rules import parse_rule
    >>> result = explain(parse_rule("age >= 30 AND plan = 'pro'"), {"age": 31})
    >>> result["member"], result["value"], [c["value"] for c in result["tree"]["children"]]
    (False, None, [True, None])
    """
    per_event = inside(rule.tree)
    nodes = [
        node
        for node in rule.tree.walk(bfs=False)
        if (node is rule.tree or _shown(node)) and id(node) not in per_event
    ]
    found = [node for node in rule.tree.find_all(*BEHAVIOURAL) if id(node) not in per_event]
    bounds = [bound for node in found for bound in window_bounds(node)]
    gen = Codegen(rule)
    codes = [gen.value(node) for node in nodes] + [matching(gen, node) for node in found]
    codes += [gen.value(bound.node) for bound in bounds]
    moment = now or sql_semantics.now_utc()
    values = compile_function(
        gen, "(" + "".join(f"{c}, " for c in codes) + ")", audience, lambda: moment
    )(profile)
    by_node = {id(node): value for node, value in zip(nodes, values, strict=False)}
    counted = dict(zip(map(id, found), values[len(nodes) :], strict=False))
    limits = dict(zip(map(id, bounds), values[len(nodes) + len(found) :], strict=True))
    extra = {
        id(node): behaviour(node, by_node.get(id(node)), counted[id(node)], bounds, limits)
        for node in found
    }
    root = _describe(rule.tree, by_node, extra)
    return {
        "member": root["value"] is True,
        "value": root["value"],
        "text": rule.text,
        "tree": root,
        "attributes": {a.name: json_value(by_node[id(a)]) for a in rule.tree.find_all(Attr)},
    }


def _shown(node: exp.Expr) -> bool:
    return not isinstance(node, _SKIP) and constant(node) is NOT_CONSTANT


def _describe(
    node: exp.Expr, values: Mapping[int, Any], extra: Mapping[int, dict[str, Any]]
) -> dict[str, Any]:
    while isinstance(node, exp.Paren):
        node = node.this
    children = [
        _describe(child, values, extra)
        for child in _children(node)
        if not isinstance(node, BEHAVIOURAL)
        and (id(child) in values or isinstance(child, exp.Paren))
    ]
    described: dict[str, Any] = {"text": render(node), "value": json_value(values.get(id(node)))}
    if id(node) in extra:
        described["behaviour"] = json_value(extra[id(node)])
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

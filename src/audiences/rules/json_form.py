"""The JSON tree form: ``all`` / ``any`` / ``none`` groups of ``{field, op, value}`` conditions.

It builds the same sqlglot tree as the text form. Every tree has a JSON form: a condition no
operator describes becomes a raw leaf ``{"expr": "age + 1 > 30"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import dialect as d
from audiences.rules.diagnostics import did_you_mean
from audiences.rules.dialect import chain, render
from audiences.rules.json_events import behaviour_json, behaviour_text
from audiences.rules.json_ops import NO_VALUE, OPS, Op
from audiences.rules.json_values import Json, JsonProblem, Path, literal, tag, value_of
from audiences.rules.normalize import parenthesize
from audiences.rules.parse import parse_tree
from audiences.rules.rule import Rule, RuleLimits
from audiences.rules.scan import SURROGATE_MESSAGE, has_surrogate

GROUPS = {"all": exp.And, "any": exp.Or}


# --- tree -> JSON -------------------------------------------------------------------------


def to_json(rule: Rule) -> dict[str, Json]:
    """The JSON tree form of a rule: groups for AND / OR / NOT, conditions, raw leaves.

    >>> from audiences.rules import parse_rule
    >>> to_json(parse_rule("country = 'US' AND NOT churned"))["all"]
    [{'field': 'country', 'op': 'equals', 'value': 'US'}, {'field': 'churned', 'op': 'is_false'}]
    """
    return tree_json(rule.tree, rule.schema)


def tree_json(node: exp.Expr, schema: Mapping[str, str] | None = None) -> dict[str, Json]:
    """The JSON form of a tree (see ``to_json``); ``schema`` says which typed literals may be
    written as plain values."""
    if isinstance(node, exp.Paren):
        return tree_json(node.this, schema)
    if isinstance(node, exp.And | exp.Or):
        key = "all" if isinstance(node, exp.And) else "any"
        return {key: [tree_json(item, schema) for item in chain(node)]}
    found = behaviour_json(node, lambda n: tree_json(n, schema))
    if found is not None and _says(found, node):
        return dict(found)
    leaf = _leaf(node, schema or {})
    if leaf is not None:
        return leaf
    if isinstance(node, exp.Not):
        inner = node.this
        if isinstance(inner, exp.Paren) and isinstance(inner.this, exp.Or):
            return {"none": [tree_json(item, schema) for item in chain(inner.this)]}
        return {"none": [tree_json(inner, schema)]}
    return {"expr": render(node)}


def _says(data: Json, node: exp.Expr) -> bool:
    """Whether a behavioural JSON condition gives back exactly the node's canonical text."""
    builder = _Builder(10_000, 1_000_000)
    try:
        return behaviour_text(data, (), builder.piece, _problem) == render(node)
    except JsonProblem:
        return False


def _problem(message: str, path: Path) -> Exception:
    return JsonProblem("rule_syntax", message, path)


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
            leaf["values"] = [value_of(v) for v in value]
        elif name not in NO_VALUE:
            leaf["value"] = value_of(value)
        return leaf
    return None


_TYPED = {exp.DType.DATE: "date", exp.DType.TIMESTAMPTZ: "timestamp"}


def _plain(target: exp.Expr, value: Any, schema: Mapping[str, str]) -> bool:
    """A typed literal is written as plain text only where validation will type it back:
    against an attribute declared with that very type."""
    if not isinstance(value, exp.Cast):
        return True
    return str(schema.get(target.name, "")) == _TYPED.get(value.to.this)


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
        if "events" in data or "sequence" in data:
            return self.behaviour(data, path)
        return tag(self.condition(data, path), path)

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
            return tag(exp.Not(this=inner), path)
        return tag(_connect(GROUPS[key], built), path)

    def raw(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        text = data["expr"]
        if len(data) != 1 or not isinstance(text, str):
            raise JsonProblem("rule_syntax", 'A raw leaf is {"expr": "<rule text>"}.', path)
        return self.parsed(text, (*path, "expr"), path, positions=True)

    def behaviour(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        """An ``events`` or ``sequence`` condition, through its text (see json_events)."""
        text = behaviour_text(data, path, self.piece, _problem)
        return self.parsed(text, path, path, positions=False)

    def piece(self, data: Json, path: Path, grouped: bool) -> str:
        """An event condition's text (its fields become event fields when it is parsed)."""
        tree = self.node(data, path, 2)
        text = render(tree)
        return f"({text})" if grouped and isinstance(tree, exp.Or) else text

    def parsed(self, text: str, located: Path, path: Path, *, positions: bool) -> exp.Expr:
        tree, problems = parse_tree(text, RuleLimits(max_depth=self.max_depth))
        self.problems.extend(
            ErrorDetail(p.code, p.message, located, p.start, p.end, p.line, p.col, p.suggestion)
            if positions
            else ErrorDetail(p.code, p.message, located, suggestion=p.suggestion)
            for p in problems
        )
        if tree is None:
            raise JsonProblem("rule_syntax", "The expression does not parse.", located)
        return tag(tree, path)

    def condition(self, data: Mapping[str, Json], path: Path) -> exp.Expr:
        name = data.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None:
            guess = did_you_mean(str(name), OPS)
            message = f"Unknown operator {name!r}." + (f" Did you mean {guess!r}?" if guess else "")
            raise JsonProblem("rule_unknown_operator", message, (*path, "op"), guess)
        allowed = {"op", "field"} if op.field else {"op"}
        allowed |= {"values"} if op.values else ({"value"} if name not in NO_VALUE else set())
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
        if has_surrogate(field):
            raise JsonProblem("rule_bad_character", SURROGATE_MESSAGE, (*path, "field"))
        return tag(d.Attr(this=field), (*path, "field"))

    def argument(self, data: Mapping[str, Json], op: Op, name: str, path: Path) -> Any:
        if name in NO_VALUE:
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


def _grouped(node: exp.Expr) -> exp.Expr:
    return exp.Paren(this=node) if isinstance(node, exp.Connector) else node


def _connect(cls: type[exp.Expr], items: list[exp.Expr]) -> exp.Expr:
    tree = _grouped(items[0])
    for item in items[1:]:
        tree = cls(this=tree, expression=_grouped(item))
    return tree

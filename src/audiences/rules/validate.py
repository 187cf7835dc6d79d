"""Validation against an attribute schema: kinds of every node, with each mismatch reported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import behaviour_kinds as bk
from audiences.rules import kinds as k
from audiences.rules.diagnostics import did_you_mean, on, span
from audiences.rules.dialect import Aggregate, Attr, EventField, EventSequence, render
from audiences.rules.kinds import Kind
from audiences.rules.nodes import operands
from audiences.rules.normalize import format_time
from audiences.rules.operators import OPERATORS
from audiences.rules.rule import Rule, RuleLimits
from audiences.rules.scan import skeleton
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import EventSchema

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In)


def annotate(
    tree: exp.Expr,
    schema: AttributeSchema,
    text: str | None = None,
    events: Mapping[str, AttributeType] | None = None,
) -> tuple[dict[int, Kind], list[ErrorDetail]]:
    """The kind of every node (by ``id``) and every typing problem, children before parents.

    ``events`` are the event property types that names inside aggregates read.
    """
    kinds: dict[int, Kind] = {}
    problems: list[ErrorDetail] = []
    properties = events or {}
    for node in reversed(list(tree.walk(bfs=False))):
        if isinstance(node, EventField):
            kinds[id(node)] = bk.field_kind(node, properties, schema, text, problems)
        else:
            kinds[id(node)] = _kind(node, kinds, schema, text, problems)
    root = kinds[id(tree)]
    if root not in (Kind.BOOLEAN, Kind.NULL, Kind.UNKNOWN):
        message = f"A rule must be a condition (true or false); this is a {root.value}."
        problems.append(on("rule_type_mismatch", message, tree, text))
    return kinds, problems


def _kind(
    node: exp.Expr,
    kinds: Mapping[int, Kind],
    schema: AttributeSchema,
    text: str | None,
    problems: list[ErrorDetail],
) -> Kind:
    if isinstance(node, Attr):
        return _attribute(node, schema, text, problems)
    if isinstance(node, Aggregate):
        return bk.aggregate_kind(node, kinds, text, problems)
    if isinstance(node, EventSequence):
        return bk.sequence_kind(node, kinds, text, problems)
    literal = k.literal_kind(node)
    if literal is not None:
        return literal
    if isinstance(node, exp.Array):
        element = k.unify([kinds[id(item)] for item in node.expressions])
        return Kind.NUMBER_LIST if element in k.NUMBERS else Kind.STRING_LIST
    if isinstance(node, exp.Cast):
        return _cast(node, kinds)
    operator = OPERATORS.get(type(node))
    if operator is None:
        return Kind.UNKNOWN
    found = [kinds.get(id(op), Kind.UNKNOWN) for op in operands(node)]
    result = operator.typing(found)
    if result is None:
        got = ", ".join(kind.value for kind in found if kind is not Kind.UNKNOWN)
        message = f"{render(node)}: {operator.name} takes {operator.accepts}, not {got}."
        problems.append(on("rule_type_mismatch", message, node, text))
        return Kind.UNKNOWN
    return result


def _cast(node: exp.Cast, kinds: Mapping[int, Kind]) -> Kind:
    target = node.to.this
    if target is exp.DType.DOUBLE:
        return Kind.FLOAT
    return Kind.DATE if target is exp.DType.DATE else Kind.TIMESTAMP


def _attribute(
    node: Attr, schema: AttributeSchema, text: str | None, problems: list[ErrorDetail]
) -> Kind:
    path = node.name
    found = k.attribute_kind(path, schema)
    if found is not None:
        return found
    ascii_form = skeleton(path)
    if ascii_form != path and ascii_form in schema:
        message = f"The name {path!r} contains non-ASCII look-alike characters."
        problems.append(on("rule_confusable", message, node, text, suggestion=ascii_form))
        return Kind.UNKNOWN
    suggestion = did_you_mean(path, schema) or did_you_mean(path.lower(), schema)
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    if suggestion is None and _double_quoted(node, text):
        # In SQL "x" names a column; a value was almost certainly meant.
        suggestion = "strings take single quotes: '" + path.replace("'", "''") + "'"
        hint = f" In SQL, double quotes name an attribute; {suggestion}."
    message = f"Unknown attribute {path}.{hint}"
    problems.append(on("rule_unknown_attribute", message, node, text, suggestion=suggestion))
    return Kind.UNKNOWN


def _double_quoted(node: Attr, text: str | None) -> bool:
    """Whether the attribute was written in double quotes in the rule's text."""
    where = span(node)
    if text is None or where is None:
        return False
    written = text[where[0] : where[1]]
    return len(written) >= 2 and written[0] == '"' and written[-1] == '"'


def type_time_literals(
    tree: exp.Expr,
    schema: AttributeSchema,
    text: str | None = None,
    events: Mapping[str, AttributeType] | None = None,
) -> list[ErrorDetail]:
    """Read string literals compared with dates or timestamps as typed literals, in place.

    ``last_seen > '2024-01-01'`` becomes ``last_seen > TIMESTAMP '2024-01-01 00:00:00+00:00'``,
    so every back end compares instants rather than text.
    """
    kinds, _ = annotate(tree, schema, events=events)
    problems: list[ErrorDetail] = []
    for node in list(tree.find_all(*_COMPARISONS)):
        others = [kinds[id(op)] for op in operands(node) if not _string(op)]
        common = k.unify(others)
        if common not in k.TIMES:
            continue
        target = exp.DType.DATE if common is Kind.DATE else exp.DType.TIMESTAMPTZ
        for op in operands(node):
            if _string(op):
                problems.extend(_retype(op, target, text))
    return problems


def _string(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _retype(literal: exp.Expr, target: exp.DType, text: str | None) -> list[ErrorDetail]:
    try:
        spelled = format_time(literal.name, target)
    except ValueError:
        label = "date" if target is exp.DType.DATE else "timestamp"
        message = f"{literal.name!r} is not a valid {label} (use ISO 8601)."
        problem = on("rule_bad_literal", message, literal, text)
        literal.replace(exp.Null())  # reported once: not again as a type mismatch
        return [problem]
    typed = exp.Cast(this=exp.Literal.string(spelled), to=exp.DataType.build(target))
    typed._meta = literal._meta
    literal.replace(typed)
    return []


def referenced_schema(tree: exp.Expr, schema: AttributeSchema) -> dict[str, Any]:
    """The schema entries of the attributes a rule reads (paths into JSON are left out)."""
    return {a.name: AttributeType(schema[a.name]) for a in tree.find_all(Attr) if a.name in schema}


def validate_tree(
    rule: Rule,
    schema: AttributeSchema,
    limits: RuleLimits,
    *,
    owned: bool = False,
    events: EventSchema = EventSchema(),
) -> tuple[Rule, list[ErrorDetail]]:
    """Bind a parsed rule to a schema: typed time literals, every type problem, the bound rule.

    The rule's tree is copied first (literals are typed in place) unless ``owned``: the caller
    has just parsed it and no one else holds it. Event names no event has had are warnings,
    kept on the bound rule (``Rule.warnings``).
    """
    tree = rule.tree if owned else rule.tree.copy()
    properties = events.properties
    problems = type_time_literals(tree, schema, rule.source, properties)
    _, typing = annotate(tree, schema, rule.source, properties)
    problems.extend(typing)
    text = render(tree)
    if len(text) > limits.max_length:
        message = f"The rule's text is over {limits.max_length:,} characters."
        problems.append(on("rule_too_large", message, tree, rule.source))
    used = {f.name: properties[f.name] for f in tree.find_all(EventField) if f.name in properties}
    warnings = tuple(bk.unknown_events(tree, events.names, rule.source))
    bound = Rule(tree, referenced_schema(tree, schema), rule.source, used, warnings)
    # The canonical text just rendered (``text`` is a cached property of an immutable rule).
    bound.__dict__["text"] = text
    return bound, problems

"""Typing of behavioural conditions: event fields against the event schema, aggregates' results,
and the warnings for event names no event has had yet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import kinds as k
from audiences.rules.diagnostics import did_you_mean, on
from audiences.rules.dialect import EVENT_BUILTINS, Aggregate, EventField, EventSequence
from audiences.rules.kinds import Kind
from audiences.schemas.attributes import AttributeType

_BUILTIN_KINDS = {"event": Kind.STRING, "timestamp": Kind.TIMESTAMP}
_SCALARS = frozenset(Kind) - {*k.LISTS, Kind.JSON, Kind.INTERVAL}
_ORDERED = _SCALARS - {Kind.BOOLEAN}
"""What min and max take: PostgreSQL has no min or max of booleans."""
_CONDITION = (Kind.BOOLEAN, Kind.NULL, Kind.UNKNOWN)


def field_kind(
    node: EventField,
    properties: Mapping[str, AttributeType],
    attributes: Mapping[str, AttributeType],
    text: str | None,
    problems: list[ErrorDetail],
) -> Kind:
    """The kind of an event field; an unknown property is an error."""
    name = node.name
    if name in _BUILTIN_KINDS:
        return _BUILTIN_KINDS[name]
    if name in properties:
        return k.of_attribute(properties[name])
    if name in attributes:
        message = (
            f"{name} is a profile attribute; inside an aggregate only event fields"
            " (event, timestamp and properties) can be read. Compare the attribute outside it."
        )
        problems.append(on("rule_attribute_in_aggregate", message, node, text))
        return Kind.UNKNOWN
    suggestion = did_you_mean(name, [*EVENT_BUILTINS, *properties])
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    message = f"Unknown event property {name}.{hint}"
    problems.append(on("rule_unknown_property", message, node, text, suggestion=suggestion))
    return Kind.UNKNOWN


def aggregate_kind(
    node: Aggregate, kinds: Mapping[int, Kind], text: str | None, problems: list[ErrorDetail]
) -> Kind:
    """The kind of an aggregate's value, from its argument's kind."""
    _condition(node.args.get("where"), kinds, text, problems)
    name, argument = node.name, node.args.get("expression")
    if argument is None:
        return Kind.INTEGER
    if argument.find(Aggregate, EventSequence) is not None:
        return Kind.UNKNOWN  # reported as a nested aggregate
    if argument.find(EventField) is None:
        message = f"The argument of {name}() must read an event field (a property or timestamp)."
        problems.append(on("rule_bad_aggregate", message, argument, text))
        return Kind.UNKNOWN
    found = kinds.get(id(argument), Kind.UNKNOWN)
    if found is Kind.UNKNOWN:
        return Kind.INTEGER if name == "count" else Kind.UNKNOWN
    wanted = {"sum": k.NUMBERS, "avg": k.NUMBERS, "min": _ORDERED, "max": _ORDERED}
    if found not in wanted.get(name, _SCALARS):
        what = {"sum": "a number", "avg": "a number", "min": "an ordered value"}
        what["max"] = what["min"]
        message = f"{name}() takes {what.get(name, 'a single value')}, not {found.value}."
        problems.append(on("rule_bad_aggregate", message, node, text))
        return Kind.UNKNOWN
    return {"count": Kind.INTEGER, "avg": Kind.FLOAT}.get(name, found)


def sequence_kind(
    node: EventSequence, kinds: Mapping[int, Kind], text: str | None, problems: list[ErrorDetail]
) -> Kind:
    """A sequence is a condition; its steps and filter are conditions on events."""
    for step in [*node.expressions, node.args.get("where")]:
        _condition(step, kinds, text, problems)
    return Kind.BOOLEAN


def _condition(
    node: exp.Expr | None, kinds: Mapping[int, Kind], text: str | None, problems: list[ErrorDetail]
) -> None:
    found = kinds.get(id(node), Kind.UNKNOWN) if node is not None else Kind.BOOLEAN
    if found not in _CONDITION:
        message = f"An event condition must be true or false; this is a {found.value}."
        problems.append(on("rule_type_mismatch", message, node, text))  # type: ignore[arg-type]


def unknown_events(tree: exp.Expr, names: Iterable[str], text: str | None) -> list[ErrorDetail]:
    """Warnings for event names compared with ``event`` that no stored event has (yet)."""
    seen = frozenset(names)
    warnings = []
    for node in tree.find_all(exp.EQ, exp.NEQ, exp.In):
        if not (isinstance(node.this, EventField) and node.this.name == "event"):
            continue
        values = node.expressions if isinstance(node, exp.In) else [node.expression]
        for value in values:
            if isinstance(value, exp.Literal) and value.is_string and value.name not in seen:
                guess = did_you_mean(value.name, seen)
                hint = f" Did you mean {guess!r}?" if guess else ""
                message = f"No event named {value.name!r} has been seen yet.{hint}"
                warnings.append(on("rule_unknown_event", message, value, text, suggestion=guess))
    return warnings

"""Behavioural conditions as Python: code over the events of ``profile[EVENTS_KEY]``.

Per-event code runs in a lambda over the event ``q`` (a ``schemas.events.Event``); the helpers
it calls (``_count``, ``_aggregate``, ``_sequence``, ``_matching``) are ``event_semantics``.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlglot import exp

from audiences.rules import dialect as d
from audiences.rules.event_semantics import EXACT
from audiences.rules.kinds import Kind
from audiences.rules.literals import constant


class Codegen(Protocol):
    """What these builders ask of ``to_python.Codegen``, the generator that calls them."""

    def const(self, value: Any) -> str:
        """Code for a constant."""
        ...

    def value(self, node: exp.Expr) -> str:
        """Code whose result is the node's SQL value, None for NULL."""
        ...

    def truth(self, node: exp.Expr) -> str:
        """Code that is True exactly when the node is TRUE."""
        ...

    def wrap(self, node: exp.Expr) -> str:
        """The conversion an attribute's raw value needs (``{}`` for none)."""
        ...

    def kind(self, node: exp.Expr) -> Kind:
        """The kind validation inferred for a node."""
        ...


_EVENT_BUILTINS = {"event": "q.name", "timestamp": "q.timestamp"}


def event_field(gen: Codegen, node: exp.Expr) -> str:
    """An event field of the event ``q`` (behavioural code runs per event in a lambda)."""
    raw = _EVENT_BUILTINS.get(node.name) or f"q.properties.get({node.name!r})"
    return gen.wrap(node).format(raw)


def _event_test(gen: Codegen, node: exp.Expr | None) -> str:
    return "lambda q: True" if node is None else f"lambda q: {gen.truth(node)}"


def aggregate(gen: Codegen, node: exp.Expr) -> str:
    """``count(*)`` or another aggregate over the events that pass the filter."""
    where = _event_test(gen, node.args.get("where"))
    argument = node.args.get("expression")
    if argument is None:
        return f"_count(_events(p), {where})"
    name = "count_distinct" if node.args.get("distinct") else node.name
    if _exact(gen, node):
        name = EXACT[name]
    return f"_aggregate({name!r}, _events(p), {where}, {_read(gen, node, argument)})"


def _exact(gen: Codegen, node: exp.Expr) -> bool:
    """Whether the node is ``sum`` or ``avg`` of a FLOAT, added up in micro-units."""
    argument = node.args.get("expression")
    exact = node.name in EXACT and not node.args.get("distinct")
    return exact and argument is not None and gen.kind(argument) is Kind.FLOAT


def _read(gen: Codegen, node: exp.Expr, argument: exp.Expr) -> str:
    """The per-event read of an aggregate's argument: micro-units for an exact sum or average,
    so a value beyond ``FLOAT_SUM_LIMIT`` is no value (nor a counted event)."""
    if _exact(gen, node):
        return f"lambda q: _micro_units({gen.value(argument)})"
    return f"lambda q: {gen.value(argument)}"


def matching(gen: Codegen, node: exp.Expr) -> str:
    """Code listing the events a behavioural node counts: those that pass its filter and have
    a value (an aggregate) or match a step (a sequence)."""
    where = _event_test(gen, node.args.get("where"))
    if isinstance(node, d.EventSequence):
        steps = " or ".join(gen.truth(step) for step in node.expressions)
        return f"_matching(_events(p), {where}, lambda q: ({steps}) or None)"
    argument = node.args.get("expression")
    read = "lambda q: True" if argument is None else _read(gen, node, argument)
    return f"_matching(_events(p), {where}, {read})"


def sequence(gen: Codegen, node: exp.Expr) -> str:
    """Whether events match the steps in order (see ``event_semantics.sequence``)."""
    steps = ", ".join(_event_test(gen, step) for step in node.expressions)
    within = node.args.get("within")
    bound = gen.const(constant(within)) if within is not None else "None"
    where = _event_test(gen, node.args.get("where"))
    return f"_sequence(_events(p), ({steps},), {bound}, {where})"

"""Tree to a Python predicate: generated source, compiled once, with SQL three-valued logic.

Each node compiles in one of three contexts. ``value`` gives the SQL value (None for NULL);
``truth`` gives a plain bool that is True exactly when the node is TRUE; ``falsity`` is True
exactly when it is FALSE. A rule's predicate is its truth code, so ``NOT`` flips context rather
than computing NULLs, AND/OR short-circuit as Python's ``and``/``or``, and a comparison with a
literal compiles to ``p.get('age') >= 30`` style code with constant lists as frozensets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

from audiences.rules import behaviour_python, event_semantics, sql_semantics
from audiences.rules import dialect as d
from audiences.rules.dialect import chain
from audiences.rules.kinds import Kind
from audiences.rules.literals import NOT_CONSTANT, constant, like_code
from audiences.rules.nodes import operands
from audiences.rules.operators import OPERATORS
from audiences.rules.rule import Rule
from audiences.rules.structure import compile_regex
from audiences.rules.validate import annotate

Profile = Mapping[str, Any]
AudienceCheck = Callable[[str, Profile], "bool | None"]
Clock = Callable[[], datetime]

_PLAIN = (str, int, float, bool)
_COMPARISONS = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Between,
    exp.In,
    exp.Coalesce,
)
_PREDICATES: tuple[type[exp.Expr], ...] = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_PREDICATES += (d.StartsWith, d.EndsWith, d.Contains, d.RegexpMatches)
_PREDICATES += (d.ListContains, d.ListHasAny, d.ListHasAll)
# Operand conversions the Python back end needs for some arguments: (class, index) -> how.
_CONVERT: dict[tuple[type[exp.Expr], int], tuple[Callable[[Any], Any], str]] = {
    (d.RegexpMatches, 1): (compile_regex, "_regex({})"),
    (d.ListHasAny, 1): (frozenset, "_values({})"),
    (d.ListHasAll, 1): (frozenset, "_values({})"),
}


def no_audience(key: str, profile: Profile) -> bool | None:
    """Default audience hook: a rule naming an audience needs the caller's hook."""
    raise ValueError(f"in_audience({key!r}) needs an `audience` hook")


def access(path: str) -> str:
    """Code reading an attribute's raw value from the profile ``p`` (NULL when missing)."""
    return f"p.get({path!r})" if "." not in path else f"_dig(p, {tuple(path.split('.'))!r})"


class Codegen:
    """Python source for the nodes of one rule, with the constants it refers to."""

    def __init__(self, rule: Rule) -> None:
        self.kinds, _ = annotate(rule.tree, rule.schema, events=rule.events)
        self.names: dict[str, Any] = {}
        self._ids = itertools.count()
        self.clock_used = False
        self.locals: set[str] = set()
        """Local variables the function body defines, which operands may name without a temp."""

    # --- helpers ----------------------------------------------------------------------------

    def temp(self) -> str:
        """A fresh local name."""
        return f"_t{next(self._ids)}"

    def hold(self, code: str) -> tuple[str, str]:
        """(name, binding): evaluate ``binding`` once, then refer to the value as ``name``."""
        if code in self.locals:
            return code, code
        name = self.temp()
        return name, f"({name} := {code})"

    def const(self, value: Any) -> str:
        """Code for a constant: inline when it is a plain literal, else a global name."""
        if value is None or (type(value) in _PLAIN and value == value):
            return repr(value)
        name = f"_c{next(self._ids)}"
        self.names[name] = value
        return name

    def kind(self, node: exp.Expr) -> Kind:
        return self.kinds.get(id(node), Kind.UNKNOWN)

    def coerce_date(self, parent: exp.Expr, node: exp.Expr) -> bool:
        """A date operand next to a timestamp reads as midnight UTC (as in SQL back ends)."""
        if not isinstance(parent, _COMPARISONS) or self.kind(node) is not Kind.DATE:
            return False
        return any(self.kind(op) is Kind.TIMESTAMP for op in operands(parent))

    def operand(self, parent: exp.Expr, node: exp.Expr, index: int) -> tuple[str, bool]:
        """(code, is_constant) for an operand; NULL constants give ``"None"``."""
        value = constant(node)
        convert = _CONVERT.get((type(parent), index))
        if value is not NOT_CONSTANT:
            if value is not None and convert:
                value = convert[0](value)
            elif value is not None and self.coerce_date(parent, node):
                value = sql_semantics.midnight(value)
            return self.const(value), True
        code = self.value(node)
        if self.coerce_date(parent, node):
            code = f"_midnight_n({code})"
        if convert:
            code = convert[1].format(code)
        return code, False

    # --- value context ----------------------------------------------------------------------

    def value(self, node: exp.Expr) -> str:
        """Code whose result is the node's SQL value, None for NULL."""
        fixed = constant(node)
        if fixed is not NOT_CONSTANT:
            return self.const(fixed)
        special = _VALUE.get(type(node))
        if special is not None:
            return special(self, node)
        return self.strict(node)

    def strict(self, node: exp.Expr) -> str:
        """An operator that is NULL when any operand is NULL (its template gets the rest)."""
        operator = OPERATORS[type(node)]
        assert operator.python is not None, f"no Python template for {type(node).__name__}"
        args, checks = self.strict_args(node)
        if args is None:
            return "None"
        nulls = [f"{check} is None" for check in checks]
        if operator.python_null:
            nulls.append(operator.python_null.format(*args))
        body = operator.python.format(*args)
        return f"(None if {' or '.join(nulls)} else {body})" if nulls else f"({body})"

    def strict_args(self, node: exp.Expr) -> tuple[list[str] | None, list[str]]:
        args, checks = [], []
        for index, op in enumerate(operands(node)):
            code, fixed = self.operand(node, op, index)
            if fixed and code == "None":
                return None, []
            if fixed:
                args.append(code)
                continue
            name, binding = self.hold(code)
            checks.append(binding)
            args.append(name)
        return args, checks

    def attribute(self, node: exp.Expr) -> str:
        """Code reading an attribute's value, converted to its kind."""
        return self.wrap(node).format(access(node.name))

    def wrap(self, node: exp.Expr) -> str:
        """The conversion an attribute's raw value needs (``{}`` for none)."""
        return {Kind.TIMESTAMP: "_timestamp({})", Kind.DATE: "_day({})"}.get(self.kind(node), "{}")

    # --- truth and falsity contexts ---------------------------------------------------------

    def truth(self, node: exp.Expr) -> str:
        """Code that is True exactly when the node is TRUE."""
        special = _TRUTH.get(type(node))
        if special is not None:
            return special(self, node, True)
        if isinstance(node, _PREDICATES):
            return self.predicate(node, True)
        return f"({self.value(node)} is True)"

    def falsity(self, node: exp.Expr) -> str:
        """Code that is True exactly when the node is FALSE."""
        special = _TRUTH.get(type(node))
        if special is not None:
            return special(self, node, False)
        if isinstance(node, _PREDICATES):
            return self.predicate(node, False)
        return f"({self.value(node)} is False)"

    def predicate(self, node: exp.Expr, want: bool) -> str:
        """A strict boolean operator: its operands are not NULL and its test holds (or fails)."""
        operator = OPERATORS[type(node)]
        assert operator.python is not None
        ops = operands(node)
        if (
            want
            and operator.none_is_false
            and all(constant(o) is not NOT_CONSTANT for o in ops[1:])
        ):
            first, _ = self.operand(node, ops[0], 0)
            rest = [self.operand(node, o, i + 1)[0] for i, o in enumerate(ops[1:])]
            if "None" not in rest:
                return f"({operator.python.format(first, *rest)})"
        args, checks = self.strict_args(node)
        if args is None:
            return "False"
        body = operator.python.format(*args)
        tests = [f"{check} is not None" for check in checks] + [body if want else f"not ({body})"]
        return f"({' and '.join(tests)})"


def _connective(gen: Codegen, node: exp.Expr, want: bool) -> str:
    joiner = " and " if isinstance(node, exp.And) == want else " or "
    context = gen.truth if want else gen.falsity
    return "(" + joiner.join(context(item) for item in chain(node)) + ")"


def _not(gen: Codegen, node: exp.Expr, want: bool) -> str:
    return gen.falsity(node.this) if want else gen.truth(node.this)


def _paren(gen: Codegen, node: exp.Expr, want: bool) -> str:
    return gen.truth(node.this) if want else gen.falsity(node.this)


def _is(gen: Codegen, node: exp.Expr, want: bool) -> str:
    return f"({gen.value(node.this)} is {'' if want else 'not '}None)"


def _in(gen: Codegen, node: exp.Expr, want: bool) -> str:
    values = gen.const(frozenset(_value_of(gen, node, v) for v in node.expressions))
    if want:
        return f"({gen.operand(node, node.this, 0)[0]} in {values})"
    name, binding = gen.hold(gen.operand(node, node.this, 0)[0])
    return f"({binding} is not None and {name} not in {values})"


def _value_of(gen: Codegen, parent: exp.Expr, node: exp.Expr) -> Any:
    value = constant(node)
    return sql_semantics.midnight(value) if gen.coerce_date(parent, node) else value


def _like(gen: Codegen, node: exp.Expr, want: bool) -> str:
    name, binding = gen.hold(gen.value(node.this))
    test = like_code(gen.const, name, node.expression.name, isinstance(node, exp.ILike))
    return f"({binding} is not None and {'' if want else 'not '}{test})"


def _between(gen: Codegen, node: exp.Expr, want: bool) -> str:
    low, high = (gen.operand(node, node.args[k], i + 1) for i, k in enumerate(("low", "high")))
    if low[1] and high[1] and "None" not in (low[0], high[0]):
        name, binding = gen.hold(gen.operand(node, node.this, 0)[0])
        test = f"{low[0]} <= {name} <= {high[0]}"
        return f"({binding} is not None and {'' if want else 'not '}({test}))"
    return f"({_between_value(gen, node)} is {want})"


def _between_value(gen: Codegen, node: exp.Expr) -> str:
    name, low, high = gen.temp(), gen.temp(), gen.temp()
    lo_code = gen.operand(node, node.args["low"], 1)[0]
    hi_code = gen.operand(node, node.args["high"], 2)[0]
    first = f"(None if ({low} := {lo_code}) is None else {name} >= {low})"
    second = f"(None if ({high} := {hi_code}) is None else {name} <= {high})"
    subject = gen.operand(node, node.this, 0)[0]
    return f"(None if ({name} := {subject}) is None else _and3({first}, {second}))"


def _bool_attr(gen: Codegen, node: exp.Expr, want: bool) -> str:
    return f"({gen.value(node)} is {want})"


_TRUTH: dict[type[exp.Expr], Callable[[Codegen, exp.Expr, bool], str]] = {
    exp.And: _connective,
    exp.Or: _connective,
    exp.Not: _not,
    exp.Paren: _paren,
    exp.Is: _is,
    exp.In: _in,
    exp.Like: _like,
    exp.ILike: _like,
    exp.Between: _between,
    d.Attr: _bool_attr,
}


def _three(gen: Codegen, node: exp.Expr) -> str:
    """A boolean node in value context, from its truth and falsity codes."""
    return f"(True if {gen.truth(node)} else False if {gen.falsity(node)} else None)"


def _connective_value(gen: Codegen, node: exp.Expr) -> str:
    helper = "_and3" if isinstance(node, exp.And) else "_or3"
    return f"{helper}({', '.join(gen.value(item) for item in chain(node))})"


def _not_value(gen: Codegen, node: exp.Expr) -> str:
    name = gen.temp()
    return f"(None if ({name} := {gen.value(node.this)}) is None else not {name})"


def _coalesce(gen: Codegen, node: exp.Expr) -> str:
    items = [gen.operand(node, op, i)[0] for i, op in enumerate(operands(node))]
    code = items[-1]
    for item in reversed(items[:-1]):
        name = gen.temp()
        code = f"({name} if ({name} := {item}) is not None else {code})"
    return code


def _attribute(gen: Codegen, node: exp.Expr) -> str:
    return gen.attribute(node)


def _clock_value(gen: Codegen, node: exp.Expr) -> str:
    gen.clock_used = True
    return "_now" if isinstance(node, exp.CurrentTimestamp) else "_today"


def _cast(gen: Codegen, node: exp.Expr) -> str:
    name = gen.temp()
    assert isinstance(node, exp.Cast)
    convert = "float" if node.to.this is exp.DType.DOUBLE else "_midnight"
    return f"(None if ({name} := {gen.value(node.this)}) is None else {convert}({name}))"


_VALUE: dict[type[exp.Expr], Callable[[Codegen, exp.Expr], str]] = {
    exp.And: _connective_value,
    exp.Or: _connective_value,
    exp.Not: _not_value,
    exp.Paren: lambda gen, node: gen.value(node.this),
    exp.Is: lambda gen, node: gen.truth(node),
    exp.In: _three,
    exp.Like: _three,
    exp.ILike: _three,
    exp.Between: _between_value,
    exp.Coalesce: _coalesce,
    d.Attr: _attribute,
    d.EventField: behaviour_python.event_field,
    d.Aggregate: behaviour_python.aggregate,
    d.EventSequence: behaviour_python.sequence,
    exp.CurrentTimestamp: _clock_value,
    exp.CurrentDate: _clock_value,
    exp.Cast: _cast,
}


_RUNTIME: dict[str, Any] = {
    "_lower": sql_semantics.lower,
    "_upper": sql_semantics.upper,
    "_mod": sql_semantics.mod,
    "_timestamp": sql_semantics.timestamp,
    "_day": sql_semantics.day,
    "_midnight": sql_semantics.midnight,
    "_midnight_n": lambda v: None if v is None else sql_semantics.midnight(v),
    "_days_between": sql_semantics.days_between,
    "_extract": sql_semantics.extract,
    "_values": sql_semantics.values,
    "_regex": compile_regex,
    "_dig": sql_semantics.dig,
    "_and3": sql_semantics.and3,
    "_events": event_semantics.events_of,
    "_count": event_semantics.count,
    "_aggregate": event_semantics.aggregate,
    "_micro_units": event_semantics.micro_units,
    "_sequence": event_semantics.sequence,
    "_matching": event_semantics.matching,
    "_or3": sql_semantics.or3,
    "UTC": UTC,
}


def compile_function(
    gen: Codegen, body: str, audience: AudienceCheck, clock: Clock
) -> Callable[[Profile], Any]:
    """Compile ``def _rule(p): return <body>`` with the constants and helpers it names."""
    lines = ["def _rule(p):"]
    if gen.clock_used:
        lines += ["    _now = _clock()", "    _today = _now.astimezone(UTC).date()"]
    lines.append(f"    return {body}")
    return define("\n".join(lines), "_rule", gen.names, audience, clock)


def define(
    source: str, name: str, names: Mapping[str, Any], audience: AudienceCheck, clock: Clock
) -> Callable[[Profile], Any]:
    """Run generated source beside the SQL-semantics helpers, its constants and the two hooks, and
    return the function it defines under ``name``."""
    namespace = {**_RUNTIME, **names, "_audience": audience, "_clock": clock}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    function: Callable[[Profile], Any] = namespace[name]
    return function


def to_predicate(
    rule: Rule,
    *,
    audience: AudienceCheck = no_audience,
    clock: Clock = sql_semantics.now_utc,
) -> Callable[[Profile], bool]:
    """Compile a rule once into ``predicate(profile) -> bool``: True when the rule is TRUE.

    A missing key is NULL. ``audience(key, profile)`` answers ``in_audience``; ``clock`` gives
    ``now()`` (read once per call, and only by rules that use the time).

    >>> from audiences.rules import parse_rule
    >>> member = to_predicate(parse_rule("age >= 30 AND NOT churned"))
    >>> member({"age": 31, "churned": False}), member({"age": 31}), member({})
    (True, False, False)
    """
    gen = Codegen(rule)
    body = gen.truth(rule.tree)
    return compile_function(gen, body, audience, clock)


def to_evaluator(
    rule: Rule, node: exp.Expr, *, audience: AudienceCheck, clock: Clock
) -> Callable[[Profile], Any]:
    """A function giving one node's SQL value (None for NULL) on a profile, for ``explain``."""
    gen = Codegen(rule)
    return compile_function(gen, gen.value(node), audience, clock)

"""The rule dialect: a sqlglot Dialect whose parser knows only our functions and whose
generator prints canonical rule text."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlglot import exp, parser, tokens
from sqlglot.dialects.dialect import Dialect
from sqlglot.generator import Generator
from sqlglot.tokenizer_core import TokenType

# Our own nodes. sqlglot's classes are reused where their meaning is already ours (Lower,
# Coalesce, Extract, ...); these exist because no sqlglot class has our exact semantics.


class Attr(exp.Expression):
    """A profile attribute, by its dotted path (``address.country``); NULL when missing."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class RuleFunc(exp.Expression, exp.Func):
    """Base of the functions only the rule language has."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "expression": True}


class InAudience(RuleFunc):
    """``in_audience('key')``: membership of another audience, resolved by a caller hook."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}
    _sql_names: ClassVar[list[str]] = ["in_audience"]


class ListContains(RuleFunc):
    """``list_contains(list, value)``: the list holds the value."""

    _sql_names: ClassVar[list[str]] = ["list_contains"]


class ListHasAny(RuleFunc):
    """``list_has_any(list, [values])``: the list holds at least one of the values."""

    _sql_names: ClassVar[list[str]] = ["list_has_any"]


class ListHasAll(RuleFunc):
    """``list_has_all(list, [values])``: the list holds every one of the values."""

    _sql_names: ClassVar[list[str]] = ["list_has_all"]


class RegexpMatches(RuleFunc):
    """``regexp_matches(text, pattern)``: an RE2 search (unanchored) in the text."""

    _sql_names: ClassVar[list[str]] = ["regexp_matches"]


class StartsWith(RuleFunc):
    """``starts_with(text, prefix)``."""

    _sql_names: ClassVar[list[str]] = ["starts_with"]


class EndsWith(RuleFunc):
    """``ends_with(text, suffix)``."""

    _sql_names: ClassVar[list[str]] = ["ends_with"]


class Contains(RuleFunc):
    """``contains(text, part)``: substring test."""

    _sql_names: ClassVar[list[str]] = ["contains"]


class DaysBetween(RuleFunc):
    """``date_diff('day', start, end)``: UTC calendar days from start to end."""

    arg_types: ClassVar[dict[str, bool]] = {"unit": True, "this": True, "expression": True}
    _sql_names: ClassVar[list[str]] = ["date_diff"]


class EventField(exp.Expression):
    """A field of an event, inside an aggregate: ``event`` (its name), ``timestamp`` or a
    property (by its dotted name). Profile attributes are not visible there."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class Aggregate(exp.Expression, exp.Func):
    """``count(*)``, ``count(DISTINCT p)``, ``sum/avg/min/max(p)``, ``last(p)``: one value over
    the profile's own events, those for which ``where`` (the ``FILTER``) is TRUE."""

    arg_types: ClassVar[dict[str, bool]] = {
        "this": True,
        "expression": False,
        "distinct": False,
        "where": False,
    }


class EventSequence(exp.Expression, exp.Func):
    """``sequence(step, step, ... [, within => INTERVAL])``: TRUE when the profile has events
    matching the steps in order (strictly increasing times, each within ``within`` of the one
    before when given), every one of them matching ``where`` (the ``FILTER``)."""

    arg_types: ClassVar[dict[str, bool]] = {"expressions": True, "within": False, "where": False}


class BadCall(exp.Expression, exp.Func):
    """A call of one of our functions with the wrong number of arguments, kept for validation."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "expressions": False}
    is_var_len_args = True


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the language: the node it builds and how many arguments it takes."""

    build: Callable[[list[Any]], exp.Expr]
    arity: tuple[int, int]
    usage: str


def _binary(cls: type[exp.Func]) -> Callable[[list[Any]], exp.Expr]:
    return lambda args: cls(this=args[0], expression=args[1])


def _unary(cls: type[exp.Func]) -> Callable[[list[Any]], exp.Expr]:
    return lambda args: cls(this=args[0])


def _date_diff(args: list[Any]) -> exp.Expr:
    return DaysBetween(unit=args[0], this=args[1], expression=args[2])


FUNCTIONS: dict[str, FunctionSpec] = {
    "lower": FunctionSpec(_unary(exp.Lower), (1, 1), "lower(text)"),
    "upper": FunctionSpec(_unary(exp.Upper), (1, 1), "upper(text)"),
    "length": FunctionSpec(_unary(exp.Length), (1, 1), "length(text)"),
    "trim": FunctionSpec(_unary(exp.Trim), (1, 1), "trim(text)"),
    "coalesce": FunctionSpec(
        lambda a: exp.Coalesce(this=a[0], expressions=a[1:]), (2, 16), "coalesce(a, b, ...)"
    ),
    "starts_with": FunctionSpec(_binary(StartsWith), (2, 2), "starts_with(text, prefix)"),
    "ends_with": FunctionSpec(_binary(EndsWith), (2, 2), "ends_with(text, suffix)"),
    "contains": FunctionSpec(_binary(Contains), (2, 2), "contains(text, part)"),
    "regexp_matches": FunctionSpec(_binary(RegexpMatches), (2, 2), "regexp_matches(text, re)"),
    "list_contains": FunctionSpec(_binary(ListContains), (2, 2), "list_contains(list, value)"),
    "list_has_any": FunctionSpec(_binary(ListHasAny), (2, 2), "list_has_any(list, [values])"),
    "list_has_all": FunctionSpec(_binary(ListHasAll), (2, 2), "list_has_all(list, [values])"),
    "in_audience": FunctionSpec(_unary(InAudience), (1, 1), "in_audience('key')"),
    "now": FunctionSpec(lambda a: exp.CurrentTimestamp(), (0, 0), "now()"),
    "current_date": FunctionSpec(lambda a: exp.CurrentDate(), (0, 0), "current_date"),
    "date_diff": FunctionSpec(_date_diff, (3, 3), "date_diff('day', start, end)"),
    "days_between": FunctionSpec(
        lambda a: DaysBetween(unit=exp.Literal.string("day"), this=a[0], expression=a[1]),
        (2, 2),
        "days_between(start, end)",
    ),
}
"""Every function a rule may call, by lower-case name (``extract`` and ``cast`` are syntax)."""


def _builder(name: str, spec: FunctionSpec) -> Callable[[list[Any]], exp.Expr]:
    def build(args: list[Any]) -> exp.Expr:
        low, high = spec.arity
        if low <= len(args) <= high:
            return spec.build(args)
        return BadCall(this=name, expressions=args)

    return build


class Rules(Dialect):
    """The rule language: a small SQL expression dialect (single quotes, double-quoted names)."""

    NORMALIZE_FUNCTIONS = "lower"

    class Tokenizer(tokens.Tokenizer):
        """Standard SQL tokens; strings escape a quote by doubling it, backslash is plain."""

        QUOTES: ClassVar[list[str | tuple[str, str]]] = ["'"]
        IDENTIFIERS: ClassVar[list[str | tuple[str, str]]] = ['"']
        STRING_ESCAPES: ClassVar[list[str]] = ["'"]

    class Parser(parser.Parser):
        """Knows our functions only: any other call parses as ``Anonymous`` and is refused."""

        FUNCTIONS: ClassVar[dict[str, Callable[..., Any]]] = {
            name.upper(): _builder(name, spec) for name, spec in FUNCTIONS.items()
        }
        FUNCTION_PARSERS: ClassVar[dict[str, Callable[..., Any]]] = {
            key: parser.Parser.FUNCTION_PARSERS[key] for key in ("CAST", "EXTRACT")
        }
        NO_PAREN_FUNCTION_PARSERS: ClassVar[dict[str, Callable[..., Any]]] = {}
        NO_PAREN_FUNCTIONS: ClassVar[dict[Any, Any]] = {
            TokenType.CURRENT_DATE: exp.CurrentDate,
            TokenType.CURRENT_TIMESTAMP: exp.CurrentTimestamp,
        }

    class Generator(Generator):
        """Prints canonical rule text: upper-case keywords, lower-case function names."""

        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **Generator.TRANSFORMS,
            Attr: lambda self, e: render_path(e.name),
            exp.CurrentTimestamp: lambda self, e: "now()",
            exp.CurrentDate: lambda self, e: "current_date",
            exp.Array: lambda self, e: f"[{self.expressions(e, flat=True)}]",
            exp.Cast: lambda self, e: _cast_sql(self, e),
            exp.Interval: lambda self, e: f"INTERVAL {self.sql(e, 'this')} {self.sql(e, 'unit')}",
            exp.Not: lambda self, e: _not_sql(self, e),
            BadCall: lambda self, e: self.func(e.name, *e.expressions),
            EventField: lambda self, e: render_field(e.name),
            Aggregate: lambda self, e: _aggregate_sql(self, e),
            EventSequence: lambda self, e: _sequence_sql(self, e),
        }


_SIMPLE_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")


def render_path(path: str) -> str:
    """Print an attribute path, quoting a segment that is not a plain lower-case name.

    >>> render_path("address.country"), render_path("Weird name")
    ('address.country', '"Weird name"')
    """
    return ".".join(
        part
        if _SIMPLE_NAME.match(part) and part.upper() not in Rules.Tokenizer.KEYWORDS
        else '"' + part.replace('"', '""') + '"'
        for part in path.split(".")
    )


EVENT_BUILTINS = ("event", "timestamp")
"""The fields every event has besides its properties (printed without quotes)."""


def render_field(name: str) -> str:
    """Print an event field: ``event`` and ``timestamp`` bare, a property as a path."""
    return name if name in EVENT_BUILTINS else render_path(name)


def _filter_sql(gen: Generator, node: exp.Expr) -> str:
    where = node.args.get("where")
    return f" FILTER (WHERE {gen.sql(where)})" if where is not None else ""


def _aggregate_sql(gen: Generator, node: exp.Expr) -> str:
    argument = node.args.get("expression")
    inner = "*" if argument is None else gen.sql(argument)
    distinct = "DISTINCT " if node.args.get("distinct") else ""
    return f"{node.name}({distinct}{inner}){_filter_sql(gen, node)}"


def _sequence_sql(gen: Generator, node: exp.Expr) -> str:
    parts = [gen.sql(step) for step in node.expressions]
    within = node.args.get("within")
    if within is not None:
        parts.append(f"within => {gen.sql(within)}")
    return f"sequence({', '.join(parts)}){_filter_sql(gen, node)}"


def _cast_sql(gen: Generator, node: exp.Cast) -> str:
    target = node.to.sql(dialect=Rules).replace("TIMESTAMPTZ", "TIMESTAMP")
    if isinstance(node.this, exp.Literal) and node.this.is_string:
        return f"{target} {gen.sql(node, 'this')}"
    return f"CAST({gen.sql(node, 'this')} AS {target})"


def _not_sql(gen: Generator, node: exp.Not) -> str:
    inner = node.this
    if isinstance(inner, exp.In):
        values = gen.expressions(inner, flat=True)
        return f"{gen.sql(inner, 'this')} NOT IN ({values})"
    if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
        return f"{gen.sql(inner, 'this')} IS NOT NULL"
    if isinstance(inner, exp.Between):
        low, high = gen.sql(inner, "low"), gen.sql(inner, "high")
        return f"{gen.sql(inner, 'this')} NOT BETWEEN {low} AND {high}"
    if isinstance(inner, exp.Like | exp.ILike):
        keyword = "LIKE" if isinstance(inner, exp.Like) else "ILIKE"
        return f"{gen.sql(inner, 'this')} NOT {keyword} {gen.sql(inner, 'expression')}"
    return f"NOT {gen.sql(node, 'this')}"


def render(tree: exp.Expr) -> str:
    """Canonical rule text for a tree (the tree must already carry the parentheses it needs).

    >>> render(exp.EQ(this=Attr(this="country"), expression=exp.Literal.string("US")))
    "country = 'US'"
    """
    return Rules().generate(tree, copy=False)


def chain(node: exp.Expr) -> list[exp.Expr]:
    """Operands of a left-deep chain of one connective, in order (without recursion, so a
    thousand ANDs are fine); a parenthesised group is one operand.

    >>> [render(n) for n in chain(exp.and_("a", "b", "c"))]
    ['a', 'b', 'c']
    """
    kind, items = type(node), []
    while type(node) is kind:
        items.append(node.expression)
        node = node.this
    items.append(node)
    return items[::-1]


def function_names() -> Sequence[str]:
    """Every callable name, for did-you-mean suggestions."""
    return [*FUNCTIONS, "extract", "cast"]

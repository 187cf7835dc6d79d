"""The semantics table: for each node class, its typing, its Python code and its SQL per engine.

Both back ends read this one table, so a rule means the same thing wherever it runs. A
``python`` template is applied to operands that are known not to be NULL (a NULL operand makes
the result NULL, SQL's strictness); nodes without a template (AND, OR, IS NULL, COALESCE, ...)
are not strict and each back end handles them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from audiences.rules import behaviour_sql
from audiences.rules import dialect as d
from audiences.rules import kinds as k
from audiences.rules import sql_builders as sql
from audiences.rules.kinds import Kind

SqlBuilder = Callable[[exp.Expr, exp.Expr, "sql.Target"], exp.Expr]
"""(original node, node rebuilt from compiled operands, target) -> engine expression."""


@dataclass(frozen=True)
class Operator:
    """What one node class means."""

    name: str
    """How messages and explanations name it."""
    accepts: str
    """The operand kinds it takes, in words, for type-mismatch messages."""
    typing: k.Typing
    python: str | None = None
    """Template over non-NULL operands ``{0}, {1}, ...``; None when the node is not strict."""
    python_null: str | None = None
    """A further condition (over the same operands) under which the result is NULL."""
    none_is_false: bool = False
    """The template is False, and safe, when operand 0 is None: no NULL check is needed."""
    sql: Mapping[str, SqlBuilder] = field(default_factory=dict)
    """Engine-specific rewrites by dialect name; ``"*"`` applies to every other engine."""


def _cmp(name: str, op: str) -> Operator:
    return Operator(
        name,
        "two values of one kind",
        k.comparison,
        f"{{0}} {op} {{1}}",
        none_is_false=op == "==",
        sql={"*": sql.comparison},
    )


def _text(name: str, template: str, result: Kind, builders: Mapping[str, SqlBuilder]) -> Operator:
    arity = template.count("{1}") + 1
    params = (k.STRING,) * arity
    return Operator(name, "text", k.fixed(*params, result=result), template, sql=builders)


_ARITH = {"*": sql.arithmetic}
_LOGIC = k.fixed(k.BOOLEAN, k.BOOLEAN, result=Kind.BOOLEAN)

OPERATORS: dict[type[exp.Expr], Operator] = {
    exp.And: Operator("AND", "conditions", _LOGIC),
    exp.Or: Operator("OR", "conditions", _LOGIC),
    exp.Not: Operator("NOT", "a condition", k.fixed(k.BOOLEAN, result=Kind.BOOLEAN)),
    exp.EQ: _cmp("=", "=="),
    exp.NEQ: _cmp("<>", "!="),
    exp.GT: _cmp(">", ">"),
    exp.GTE: _cmp(">=", ">="),
    exp.LT: _cmp("<", "<"),
    exp.LTE: _cmp("<=", "<="),
    exp.Between: Operator(
        "BETWEEN", "three values of one kind", k.comparison, sql={"*": sql.comparison}
    ),
    exp.In: Operator(
        "IN", "a value and a list of literals of its kind", k.comparison, sql={"*": sql.comparison}
    ),
    exp.Is: Operator("IS NULL", "any value", k.fixed(k.ANY, k.ANY, result=Kind.BOOLEAN)),
    exp.Like: Operator(
        "LIKE",
        "text and a pattern",
        k.fixed(k.STRING, k.STRING, result=Kind.BOOLEAN),
        sql={"*": sql.like},
    ),
    exp.ILike: Operator(
        "ILIKE",
        "text and a pattern",
        k.fixed(k.STRING, k.STRING, result=Kind.BOOLEAN),
        sql={"*": sql.ilike},
    ),
    exp.Add: Operator(
        "+", "numbers, or a date/timestamp and an interval", k.arithmetic, "{0} + {1}", sql=_ARITH
    ),
    exp.Sub: Operator(
        "-", "numbers, or a date/timestamp and an interval", k.arithmetic, "{0} - {1}", sql=_ARITH
    ),
    exp.Mul: Operator("*", "numbers", k.numeric, "{0} * {1}", sql=_ARITH),
    exp.Div: Operator("/", "numbers", k.division, "{0} / {1}", "{1} == 0", sql={"*": sql.divide}),
    exp.Mod: Operator(
        "%",
        "integers",
        k.fixed(frozenset({Kind.INTEGER}), frozenset({Kind.INTEGER}), result=Kind.INTEGER),
        "_mod({0}, {1})",
        "{1} == 0",
        sql={"*": sql.modulo},
    ),
    exp.Neg: Operator("-", "a number", k.numeric, "-{0}", sql=_ARITH),
    exp.Coalesce: Operator(
        "coalesce", "values of one kind", k.same_as_first, sql={"*": sql.coalesce}
    ),
    exp.Lower: _text(
        "lower", "_lower({0})", Kind.STRING, {"clickhouse": sql.keep, "*": sql.ascii_case}
    ),
    exp.Upper: _text(
        "upper", "_upper({0})", Kind.STRING, {"clickhouse": sql.keep, "*": sql.ascii_case}
    ),
    exp.Length: _text("length", "len({0})", Kind.INTEGER, {"postgres": sql.bigint}),
    exp.Trim: _text("trim", "{0}.strip(' ')", Kind.STRING, {}),
    d.StartsWith: _text("starts_with", "{0}.startswith({1})", Kind.BOOLEAN, {"*": sql.starts_with}),
    d.EndsWith: _text("ends_with", "{0}.endswith({1})", Kind.BOOLEAN, {"*": sql.ends_with}),
    d.Contains: _text("contains", "({1} in {0})", Kind.BOOLEAN, {"*": sql.contains}),
    d.RegexpMatches: _text(
        "regexp_matches", "({1}.search({0}) is not None)", Kind.BOOLEAN, {"*": sql.regexp}
    ),
    d.ListContains: Operator(
        "list_contains",
        "a list and a value of its element kind",
        k.list_membership,
        "({1} in {0})",
        sql={"*": sql.list_contains},
    ),
    d.ListHasAny: Operator(
        "list_has_any",
        "two lists of one element kind",
        k.list_overlap,
        "(not {1}.isdisjoint({0}))",
        sql={"*": sql.list_has_any},
    ),
    d.ListHasAll: Operator(
        "list_has_all",
        "two lists of one element kind",
        k.list_overlap,
        "{1}.issubset({0})",
        sql={"*": sql.list_has_all},
    ),
    d.InAudience: Operator(
        "in_audience",
        "an audience key",
        k.fixed(k.STRING, result=Kind.BOOLEAN),
        "_audience({0}, p)",
        sql={"*": sql.in_audience},
    ),
    d.DaysBetween: Operator(
        "date_diff",
        "'day' and two dates or timestamps",
        k.fixed(k.STRING, k.TIME, k.TIME, result=Kind.INTEGER),
        "_days_between({1}, {2})",
        sql={"*": sql.days_between},
    ),
    exp.Extract: Operator(
        "extract",
        "a date or timestamp",
        k.fixed(k.ANY, k.TIME, result=Kind.INTEGER),
        "_extract({0}, {1})",
        sql={"*": sql.extract},
    ),
    exp.CurrentTimestamp: Operator("now", "nothing", lambda _: Kind.TIMESTAMP, sql={"*": sql.now}),
    exp.CurrentDate: Operator("current_date", "nothing", lambda _: Kind.DATE, sql={"*": sql.today}),
    exp.Cast: Operator(
        "CAST", "a number to DOUBLE, or a date to TIMESTAMP", lambda _: None, sql={"*": sql.cast}
    ),
    d.Attr: Operator("attribute", "", lambda _: None, sql={"*": sql.attribute}),
    d.EventField: Operator("event field", "", lambda _: None, sql={"*": behaviour_sql.event_field}),
    d.Aggregate: Operator("aggregate", "", lambda _: None, sql={"*": behaviour_sql.aggregate}),
    d.EventSequence: Operator("sequence", "", lambda _: None, sql={"*": behaviour_sql.sequence}),
    exp.Literal: Operator("literal", "", lambda _: None, sql={"*": sql.literal}),
    exp.Array: Operator("list", "literals of one kind", lambda _: None, sql={"*": sql.array}),
    exp.Interval: Operator("interval", "", lambda _: Kind.INTERVAL, sql={"*": sql.interval}),
    exp.Boolean: Operator("boolean", "", lambda _: Kind.BOOLEAN),
    exp.Null: Operator("NULL", "", lambda _: Kind.NULL),
    exp.Paren: Operator("()", "", lambda kinds: kinds[0]),
    exp.Var: Operator("unit", "", lambda _: Kind.STRING),
}
"""Every node class a rule may contain. Anything else is refused by validation."""


def sql_builder(node_class: type[exp.Expr], dialect: str) -> SqlBuilder | None:
    """The engine rewrite for a node class, if it needs one."""
    builders = OPERATORS[node_class].sql
    return builders.get(dialect) or builders.get("*")

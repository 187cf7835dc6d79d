"""Tree to engine SQL (DuckDB, PostgreSQL, ClickHouse) through sqlglot's generators."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlglot import exp

from audiences.rules import sql_builders as sql
from audiences.rules.dialect import chain
from audiences.rules.kinds import attribute_kind
from audiences.rules.normalize import parenthesize
from audiences.rules.operators import OPERATORS, sql_builder
from audiences.rules.rule import Rule
from audiences.rules.sql_semantics import now_utc
from audiences.rules.validate import annotate

Dialect = Literal["duckdb", "postgres", "clickhouse"]
DIALECTS: tuple[Dialect, ...] = ("duckdb", "postgres", "clickhouse")
NOW_PARAMETER = sql.NOW_PARAMETER
PARAMETER_DIALECTS: tuple[Dialect, ...] = ("duckdb",)
"""Dialects that ``to_sql(..., now_parameter=True)`` compiles to (named ``$now`` parameters)."""


def to_sql(
    rule: Rule,
    dialect: Dialect,
    *,
    column: sql.ColumnHook | None = None,
    audience: sql.AudienceHook = sql.no_audience,
    now: datetime | None = None,
    now_parameter: bool = False,
    filter_only: bool = False,
) -> str:
    """The rule as a boolean SQL expression for an engine, ready for a ``WHERE`` clause.

    ``column(path)`` maps an attribute to an expression (default: a quoted column of the
    same name; a dotted path is a struct field, or JSON on PostgreSQL). ``audience(key)``
    gives the expression for ``in_audience(key)``. ``now`` is the reference time of
    ``now()`` / ``current_date`` (default: the time of the call); pass the same to the Python
    back end for identical results. The engine session must run in UTC.

    With ``now_parameter`` (DuckDB only), the reference time is the named parameter ``$now``
    instead, so the text does not change with time and can be compiled once per rule; bind
    ``{NOW_PARAMETER: moment}`` (an aware datetime) when ``reads_clock(rule)``, and nothing
    otherwise (DuckDB refuses parameters a statement does not use).

    With ``filter_only`` the text is only ever a ``WHERE`` condition, never read for its
    value: the tests at the top of the rule's AND/OR chains may then be FALSE where their
    value is NULL (both leave the row out, and such a chain is TRUE on the same rows either
    way), in the cheaper forms an engine's spelling offers (``Spelling.list_filters``).

    >>> from audiences.rules import parse_rule
    >>> to_sql(parse_rule("plan IN ('pro', 'team') AND name < 'm'"), "postgres")
    '"plan" IN (\\'pro\\', \\'team\\') AND "name" COLLATE "C" < \\'m\\''
    >>> to_sql(parse_rule("seen > now() - INTERVAL 7 DAY"), "duckdb", now_parameter=True)
    '"seen" > CAST($now AS TIMESTAMPTZ) - INTERVAL 7 DAY'
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    if now_parameter and dialect not in PARAMETER_DIALECTS:
        raise ValueError(f"now_parameter is not compiled for {dialect}")
    moment = None if now_parameter else now or now_utc()
    tree = _tree(
        rule, dialect, column=column, audience=audience, now=moment, filter_only=filter_only
    )
    return tree.sql(dialect)


def to_sql_tree(
    rule: Rule,
    dialect: Dialect,
    *,
    column: sql.ColumnHook | None = None,
    audience: sql.AudienceHook = sql.no_audience,
    now: datetime | None = None,
) -> exp.Expr:
    """The engine expression tree behind ``to_sql`` (for callers that embed it in a query)."""
    return _tree(rule, dialect, column=column, audience=audience, now=now or now_utc())


def _tree(
    rule: Rule,
    dialect: Dialect,
    *,
    column: sql.ColumnHook | None,
    audience: sql.AudienceHook,
    now: datetime | None,
    filter_only: bool = False,
) -> exp.Expr:
    kinds, _ = annotate(rule.tree, rule.schema, events=rule.events)
    path_kinds = {
        path: kind
        for path in rule.schema
        if (kind := attribute_kind(path, rule.schema)) is not None
    }
    target = sql.Target(
        dialect=dialect,
        column=column or sql.default_column(dialect, path_kinds),
        audience=audience,
        now=now,
        kinds=kinds,
        filtering=_filtering(rule.tree) if filter_only else frozenset(),
    )
    tree = _emit(rule.tree, target)
    return parenthesize(tree)


def _filtering(tree: exp.Expr) -> frozenset[int]:
    """The nodes whose NULL may read as FALSE in a WHERE condition: the tree and, through
    AND, OR and brackets, the operands under it (whether a chain of AND and OR is TRUE depends
    only on which of its operands are TRUE)."""
    found, stack = set(), [tree]
    while stack:
        node = stack.pop()
        found.add(id(node))
        if isinstance(node, exp.And | exp.Or):  # not every Connector: XOR needs both sides
            stack += chain(node)
        elif isinstance(node, exp.Paren):
            stack.append(node.this)
    return frozenset(found)


def _emit(node: exp.Expr, target: sql.Target) -> exp.Expr:
    if isinstance(node, exp.Connector):
        items = chain(node)
        compiled = [_emit(item, target) for item in items]
        result = compiled[0]
        for item in compiled[1:]:
            result = type(node)(this=result, expression=item)
        return result
    rebuilt = _rebuild(node, target)
    builder = sql_builder(type(node), target.dialect) if type(node) in OPERATORS else None
    return builder(node, rebuilt, target) if builder else rebuilt


def _rebuild(node: exp.Expr, target: sql.Target) -> exp.Expr:
    args: dict[str, object] = {}
    for key, value in node.args.items():
        if isinstance(value, list):
            args[key] = [_emit(v, target) if isinstance(v, exp.Expr) else v for v in value]
        elif isinstance(value, exp.Expr) and not isinstance(value, exp.DataType | exp.Var):
            args[key] = _emit(value, target)
        else:
            args[key] = value.copy() if isinstance(value, exp.Expr) else value
    return type(node)(**args)

"""Behavioural conditions as SQL: correlated subqueries over the profile's events.

The engine runs a rule as ``SELECT profiles.pid FROM <profiles> AS profiles WHERE <rule>`` with
the workspace's events visible as ``events`` (see docs/rules.md, "Running on an engine"). An
aggregate becomes ``(SELECT <aggregate> FROM events AS e WHERE e.pid = profiles.pid AND
(<filter>))``; a sequence an ``EXISTS`` over one alias per step (``e1``, ``e2``, ...).
"""

from __future__ import annotations

from sqlglot import exp

from audiences.rules.kinds import Kind
from audiences.rules.sql_builders import Target

EVENTS = "events"
"""The relation the engine makes the workspace's events visible as."""
PROFILES = "profiles"
"""The alias of the profile table in the engine's query."""
ALIAS = "e"
"""The events alias inside an aggregate's subquery."""


def event_field(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """An event's column, qualified by the subquery's alias."""
    return exp.column(exp.to_identifier(original.name, quoted=True), table=ALIAS)


def aggregate(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """A scalar subquery: the aggregate over the profile's events that pass the filter."""
    name, argument = original.name, new.args.get("expression")
    conditions = _own(ALIAS, new.args.get("where"))
    if argument is not None and _text(original.args["expression"], target):
        argument = exp.Collate(this=argument, expression=exp.to_identifier("C", quoted=True))
    if name == "last" and argument is not None:
        return exp.Subquery(this=_last(argument, conditions))
    if argument is None:
        projection: exp.Expr = exp.Count(this=exp.Star())
    else:
        spelled = "count_distinct" if original.args.get("distinct") else name
        projection = target.build(target.spelling.aggregates[spelled], x=argument)
    query = exp.select(projection).from_(_events(ALIAS)).where(exp.and_(*conditions))
    return exp.Subquery(this=query)


def _last(argument: exp.Expr, conditions: list[exp.Expr]) -> exp.Select:
    """The value of the latest event that has one; ties in time go to the greatest value."""
    present = exp.Not(this=exp.Is(this=argument.copy(), expression=exp.Null()))
    order = [
        exp.Ordered(this=exp.column(exp.to_identifier("timestamp", quoted=True), table=ALIAS)),
        exp.Ordered(this=argument.copy()),
    ]
    for item in order:
        item.set("desc", True)
    query = exp.select(argument).from_(_events(ALIAS)).where(exp.and_(*conditions, present))
    return query.order_by(*order).limit(1)


def sequence(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """``EXISTS`` a choice of one event per step, in strictly increasing time."""
    where, within = new.args.get("where"), new.args.get("within")
    aliases = [f"{ALIAS}{index + 1}" for index in range(len(new.expressions))]
    conditions: list[exp.Expr] = []
    for index, (alias, step) in enumerate(zip(aliases, new.expressions, strict=True)):
        conditions += _own(alias, step)
        if where is not None:
            conditions.append(_aliased(where, alias))
        if index:
            before, now = (_time(a) for a in (aliases[index - 1], alias))
            conditions.append(exp.LT(this=before, expression=now))
            if within is not None:
                bound = exp.Add(this=before.copy(), expression=within.copy())
                conditions.append(exp.LTE(this=now.copy(), expression=bound))
    query = exp.select(exp.Literal.number(1)).from_(_events(aliases[0]))
    for alias in aliases[1:]:
        query = query.join(_events(alias), join_type="CROSS")
    return exp.Exists(this=query.where(exp.and_(*conditions)))


def _own(alias: str, condition: exp.Expr | None) -> list[exp.Expr]:
    """The correlation on the profile's pid, and the condition (if any) on that alias."""
    pid = exp.EQ(this=exp.column("pid", table=alias), expression=exp.column("pid", table=PROFILES))
    if condition is None:
        return [pid]
    return [pid, exp.Paren(this=_aliased(condition, alias))]


def _aliased(condition: exp.Expr, alias: str) -> exp.Expr:
    if alias == ALIAS:
        return condition.copy()

    def rename(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.table == ALIAS:
            return exp.column(node.this.copy(), table=alias)
        return node

    return condition.transform(rename)


def _events(alias: str) -> exp.Expr:
    return exp.Table(
        this=exp.to_identifier(EVENTS), alias=exp.TableAlias(this=exp.to_identifier(alias))
    )


def _time(alias: str) -> exp.Expr:
    return exp.column(exp.to_identifier("timestamp", quoted=True), table=alias)


def _text(argument: exp.Expr, target: Target) -> bool:
    """Text compared by min/max/last must be ordered by code point (PostgreSQL's collation)."""
    return target.spelling.text_order_collation and target.kind(argument) is Kind.STRING

"""Behavioural conditions as SQL: subqueries over the events, correlated on the profile.

The engine runs a rule as ``SELECT profiles.pid FROM <profiles> AS profiles WHERE <rule>`` with
the workspace's events visible as ``events`` (see docs/rules.md, "Running on an engine"). An
aggregate becomes the profile's row of the events grouped by profile (see :func:`aggregate`); a
sequence an ``EXISTS`` over one alias per step (``e1``, ``e2``, ...).
"""

from __future__ import annotations

from sqlglot import exp

from audiences.rules.event_semantics import EXACT, MICRO
from audiences.rules.kinds import Kind
from audiences.rules.sql_builders import Target

EVENTS = "events"
"""The relation the engine makes the workspace's events visible as."""
PROFILES = "profiles"
"""The alias of the profile table in the engine's query."""
ALIAS = "e"
"""The events alias inside an aggregate's subquery."""
GROUPED, VALUE, COUNT = "a", "v", "n"
"""The alias of an aggregate's events grouped by profile, of the aggregate in it, and of the
count of values beside an exact sum (``avg`` of a FLOAT)."""
LATEST, RANK = "l", "n"
"""The alias of the events ranked latest first per profile (``last``), and of the rank."""


def event_field(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """An event's column, qualified by the subquery's alias."""
    return exp.column(exp.to_identifier(original.name, quoted=True), table=ALIAS)


def aggregate(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """The aggregate of the profile's events that pass the filter, read from the events grouped
    by profile: ``(SELECT a.v FROM (SELECT e.pid, <aggregate> AS v FROM events AS e WHERE
    <filter> GROUP BY e.pid) AS a WHERE a.pid = profiles.pid)``, a count of none being 0.

    The grouped subquery does not depend on the profile, so the engine aggregates the events
    once and joins (measured in bench/events: a subquery correlated inside the aggregate was
    2-7x slower than the same condition written by hand)."""
    name, argument = original.name, new.args.get("expression")
    where = new.args.get("where")
    conditions: list[exp.Expr] = [] if where is None else [exp.Paren(this=where.copy())]
    if argument is not None and _text(original.args["expression"], target):
        argument = exp.Collate(this=argument, expression=exp.to_identifier("C", quoted=True))
    result: exp.Expr = exp.column(VALUE, table=GROUPED)
    if name == "last" and argument is not None:
        grouped = _latest(argument, conditions)
    elif argument is not None and _exact(original, target):
        grouped, result = _exact_sum(name, argument, conditions, target)
    else:
        if argument is None:
            projection: exp.Expr = exp.Count(this=exp.Star())
        else:
            spelled = "count_distinct" if original.args.get("distinct") else name
            if name in ("sum", "avg") and target.kind(original.args["expression"]) is Kind.INTEGER:
                spelled = f"{name}_integer"
            projection = target.build(target.spelling.aggregates[spelled], x=argument)
        grouped = (
            exp.select(_pid(ALIAS), exp.alias_(projection, VALUE))
            .from_(_events(ALIAS))
            .group_by(_pid(ALIAS))
        )
        if conditions:
            grouped = grouped.where(exp.and_(*conditions))
    value = exp.Subquery(
        this=exp.select(result)
        .from_(exp.Subquery(this=grouped, alias=exp.TableAlias(this=exp.to_identifier(GROUPED))))
        .where(exp.EQ(this=_pid(GROUPED), expression=_pid(PROFILES)))
    )
    if name == "count":
        return exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
    return value


def _exact(original: exp.Expr, target: Target) -> bool:
    """Whether the node is ``sum`` or ``avg`` of a FLOAT, added up in micro-units."""
    argument = original.args.get("expression")
    exact = original.name in EXACT and not original.args.get("distinct")
    return exact and argument is not None and target.kind(argument) is Kind.FLOAT


def _exact_sum(
    name: str, argument: exp.Expr, conditions: list[exp.Expr], target: Target
) -> tuple[exp.Select, exp.Expr]:
    """``sum``/``avg`` of a FLOAT as ``event_semantics`` computes it: each profile's exact sum
    of micro-units (and their count), and the value read from them: that sum as the nearest
    double, over a million (and over the count)."""
    spelling = target.spelling
    units = target.build(spelling.micro_units, x=argument)
    total = target.build(spelling.exact_sum, u=units)
    projections = [_pid(ALIAS), exp.alias_(total, VALUE)]
    if name == "avg":
        projections.append(exp.alias_(exp.Count(this=units.copy()), COUNT))
    grouped = exp.select(*projections).from_(_events(ALIAS)).group_by(_pid(ALIAS))
    if conditions:
        grouped = grouped.where(exp.and_(*conditions))
    nearest = target.build(spelling.exact_double, s=exp.column(VALUE, table=GROUPED))
    result = exp.Div(this=exp.paren(nearest), expression=_double(MICRO))
    if name == "avg":
        count_double = exp.cast(exp.column(COUNT, table=GROUPED), exp.DataType.Type.DOUBLE)
        result = exp.Div(this=result, expression=count_double)
    return grouped, result


def _double(value: float) -> exp.Expr:
    """A whole number as a double literal (``CAST(1000000 AS DOUBLE)``)."""
    return exp.cast(exp.Literal.number(f"{value:.0f}"), exp.DataType.Type.DOUBLE)


def _latest(argument: exp.Expr, conditions: list[exp.Expr]) -> exp.Select:
    """Each profile's latest value of ``argument`` among the events that have one (ties in
    time go to the greatest value): ranked per profile, the first kept."""
    present = exp.Not(this=exp.Is(this=argument.copy(), expression=exp.Null()))
    order = [
        exp.Ordered(this=exp.column(exp.to_identifier("timestamp", quoted=True), table=ALIAS)),
        exp.Ordered(this=argument.copy()),
    ]
    for item in order:
        item.set("desc", True)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[_pid(ALIAS)],
        order=exp.Order(expressions=order),
    )
    ranked = (
        exp.select(_pid(ALIAS), exp.alias_(argument, VALUE), exp.alias_(rank, RANK))
        .from_(_events(ALIAS))
        .where(exp.and_(*conditions, present))
    )
    return (
        exp.select(_pid(LATEST), exp.column(VALUE, table=LATEST))
        .from_(exp.Subquery(this=ranked, alias=exp.TableAlias(this=exp.to_identifier(LATEST))))
        .where(exp.EQ(this=exp.column(RANK, table=LATEST), expression=exp.Literal.number(1)))
    )


def _pid(alias: str) -> exp.Expr:
    return exp.column("pid", table=alias)


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

"""Behavioural conditions: aggregates over a profile's events and sequences of them.

``count(*) FILTER (WHERE event = 'order') >= 3`` parses, as SQL, to an anonymous ``count`` call
inside a ``FILTER``; this module turns those into our own nodes (``Aggregate``, ``EventSequence``)
whose names are event fields (``EventField``), and holds the checks no schema is needed for:
aggregates do not nest, sequences have a bounded number of steps, windows are sane.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules.diagnostics import on
from audiences.rules.dialect import Aggregate, Attr, EventField, EventSequence, InAudience
from audiences.rules.rule import RuleLimits

AGGREGATES = ("count", "sum", "avg", "min", "max", "last")
"""Aggregate functions over events, by name."""
MAX_STEPS = 8
"""Most steps a ``sequence(...)`` may have."""
MAX_WINDOW_DAYS = 3660
"""Longest interval (about ten years) a window or a sequence's ``within`` may span."""
EVENTS_KEY = "$events"
"""The profile key under which Python predicates read a profile's events (a sequence of
``schemas.events.Event``, oldest first; missing means none). No attribute can be named so."""

_DAYS = {"YEAR": 366, "MONTH": 31, "WEEK": 7, "DAY": 1, "HOUR": 1 / 24, "MINUTE": 1 / 1440}
_DAYS["SECOND"] = 1 / 86400
BEHAVIOURAL = (Aggregate, EventSequence)


def is_behavioural(tree: exp.Expr) -> bool:
    """Whether a rule reads events.

    >>> from audiences.rules import parse_rule
    >>> is_behavioural(parse_rule("count(*) >= 1").tree), is_behavioural(parse_rule("a").tree)
    (True, False)
    """
    return tree.find(*BEHAVIOURAL) is not None


def from_call(node: exp.Anonymous, text: str | None, problems: list[ErrorDetail]) -> exp.Expr:
    """Our node for a parsed ``count(...)``, ``sum(...)``, ... or ``sequence(...)`` call."""
    name = node.name.lower()
    built = _sequence(node, text, problems) if name == "sequence" else _aggregate(name, node)
    if isinstance(built, str):
        problems.append(on("rule_bad_aggregate", built, node, text, suggestion=_usage(name)))
        return exp.Null()
    built._meta = node._meta
    return built


def _aggregate(name: str, node: exp.Anonymous) -> exp.Expr | str:
    args = node.expressions
    if len(args) != 1:
        return f"{name}() takes one argument: {_usage(name)}."
    (arg,) = args
    distinct = isinstance(arg, exp.Distinct)
    if distinct:
        if name != "count" or len(arg.expressions) != 1:
            return f"DISTINCT is allowed in count(DISTINCT p) only, with one argument: {name}()."
        arg = arg.expressions[0]
    if isinstance(arg, exp.Star):
        if name != "count" or distinct:
            return f"{name}(*) is not an aggregate; use {_usage(name)}."
        return Aggregate(this=name)
    return Aggregate(this=name, expression=event_fields(arg), distinct=distinct or None)


def _sequence(node: exp.Anonymous, text: str | None, problems: list[ErrorDetail]) -> exp.Expr | str:
    steps, within = [], None
    for arg in node.expressions:
        if not isinstance(arg, exp.Kwarg):
            steps.append(event_fields(arg))
        elif arg.this.name.lower() == "within" and isinstance(arg.expression, exp.Interval):
            within = arg.expression
        else:
            return "sequence() takes steps and an optional within => INTERVAL n UNIT."
    if len(steps) < 2:
        return "sequence() needs at least two steps."
    return EventSequence(expressions=steps, within=within)


def with_filter(node: exp.Filter) -> exp.Expr:
    """An aggregate or sequence with its ``FILTER (WHERE ...)`` condition."""
    target, where = node.this, node.expression
    if not isinstance(target, BEHAVIOURAL) or not isinstance(where, exp.Where):
        return node
    target.set("where", event_fields(where.this))
    return target


def event_fields(tree: exp.Expr) -> exp.Expr:
    """Names inside an aggregate are event fields, not profile attributes."""
    for attr in list(tree.find_all(Attr)):
        field = EventField(this=attr.name)
        field._meta = attr._meta
        if attr is tree:
            return field
        attr.replace(field)
    return tree


def _usage(name: str) -> str:
    usages = {
        "count": "count(*), count(p) or count(DISTINCT p)",
        "sequence": "sequence(step, step, within => INTERVAL 7 DAY)",
    }
    return usages.get(name, f"{name}(p)")


def check_aggregate(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    """An aggregate or sequence holds no other aggregate and no audience, and sane windows."""
    for inner in node.find_all(*BEHAVIOURAL, InAudience):
        if inner is node:
            continue
        if isinstance(inner, InAudience):
            message = "in_audience() reads the profile: it cannot be used inside an aggregate."
            yield on("rule_forbidden", message, inner, text)
        else:
            message = (
                "Aggregates cannot be nested: an aggregate reads events, not other aggregates."
            )
            yield on("rule_nested_aggregate", message, inner, text)
    if isinstance(node, EventSequence):
        yield from _steps(node, text)
    for interval in node.find_all(exp.Interval):
        yield from _window(interval, text, positive=interval is node.args.get("within"))
    where = node.args.get("where")
    for between in where.find_all(exp.Between) if where is not None else ():
        yield from _between(between, text)


def _steps(node: exp.Expr, text: str | None) -> Iterator[ErrorDetail]:
    if len(node.expressions) > MAX_STEPS:
        message = f"A sequence has at most {MAX_STEPS} steps; this one has {len(node.expressions)}."
        yield on("rule_too_many_steps", message, node.expressions[MAX_STEPS], text)


def interval_days(node: exp.Expr) -> float | None:
    """An interval literal's length in days (months and years counted long), if it is one."""
    amount, unit = node.this, node.text("unit").upper()
    if not isinstance(node, exp.Interval) or unit not in _DAYS:
        return None
    negative = isinstance(amount, exp.Neg)
    literal = amount.this if negative else amount
    if not isinstance(literal, exp.Literal) or not literal.this.lstrip("-").isdigit():
        return None
    return (-1 if negative else 1) * int(literal.this) * _DAYS[unit]


def _window(node: exp.Expr, text: str | None, *, positive: bool) -> Iterator[ErrorDetail]:
    days = interval_days(node)
    if days is None:
        return
    if days < 0 or (positive and days == 0):
        wanted = "longer than zero" if positive else "zero or more"
        message = f"A window's interval must be {wanted}; write now() - INTERVAL n UNIT."
        yield on("rule_bad_window", message, node, text)
    elif days > MAX_WINDOW_DAYS:
        message = f"A window may span at most {MAX_WINDOW_DAYS} days (about ten years)."
        yield on("rule_bad_window", message, node, text)


def _between(node: exp.Expr, text: str | None) -> Iterator[ErrorDetail]:
    low, high = (_offset(node.args[key]) for key in ("low", "high"))
    if low is not None and high is not None and low > high:
        message = "The window is empty: BETWEEN takes the earlier bound first."
        yield on("rule_bad_window", message, node, text)


def _offset(node: exp.Expr) -> float | None:
    """Days from now of ``now() - INTERVAL n UNIT`` (or ``now()``), else None."""
    if isinstance(node, exp.CurrentTimestamp):
        return 0.0
    if isinstance(node, exp.Add | exp.Sub) and isinstance(node.this, exp.CurrentTimestamp):
        days = interval_days(node.expression)
        if days is not None:
            return days if isinstance(node, exp.Add) else -days
    return None


def check_field(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    """An event field is only ever read inside an aggregate."""
    if node.find_ancestor(*BEHAVIOURAL) is None:
        yield on("rule_forbidden", "Event fields are read inside an aggregate.", node, text)


def inside(tree: exp.Expr) -> set[int]:
    """Ids of the nodes inside aggregates and sequences (not the aggregates themselves):
    code for them runs once per event, not once per profile."""
    found: set[int] = set()
    for node in tree.find_all(*BEHAVIOURAL):
        found.update(id(sub) for sub in node.walk() if sub is not node)
    return found


STREAMING_REASON = (
    "it reads the profile's events through relative windows only, so its answer follows each"
    " event write and, as time passes, each window boundary within the sweep interval"
)
"""The reason given for a behavioural rule evaluated by streaming."""


def batch_reason(tree: exp.Expr) -> str | None:
    """Why a rule that reads events is evaluated in scheduled batch runs, or None if it reads
    none or streaming follows it (:func:`streams`).

    >>> from audiences.rules import parse_rule
    >>> batch_reason(parse_rule("max(timestamp) >= now() - INTERVAL 1 DAY").tree)
    >>> batch_reason(parse_rule("sequence(event = 'a', event = 'b')").tree)[:32]
    'it tests a sequence of events (s'
    """
    if tree.find(EventSequence) is not None:
        return "it tests a sequence of events (sequence(...)), which only batch runs evaluate"
    found = list(tree.find_all(Aggregate))
    if not found:
        return None
    if any(_absolute(node) for node in found):
        return (
            "it reads events in an absolute window (timestamp compared with a fixed time),"
            " which only batch runs evaluate"
        )
    about_events = [clock for clock in _clocks(tree) if _about_events(clock)]
    return _CALENDAR if any(not event_clock(clock) for clock in about_events) else None


_CALENDAR = (
    "it compares event times with the clock in calendar units (months, years, current_date)"
    " or other than through a window on timestamp, which only scheduled batch runs evaluate"
)


def _clocks(tree: exp.Expr) -> Iterator[exp.Expr]:
    yield from tree.find_all(exp.CurrentTimestamp, exp.CurrentDate)


def _about_events(clock: exp.Expr) -> bool:
    """Whether a clock read is inside an aggregate or compared with one."""
    if clock.find_ancestor(*BEHAVIOURAL) is not None:
        return True
    comparison = clock.find_ancestor(*_CLOCK_COMPARISONS)
    return comparison is not None and comparison.find(*BEHAVIOURAL) is not None


def event_clock(clock: exp.Expr) -> bool:
    """Whether a clock read is a window on ``timestamp`` of fixed units inside an aggregate's
    filter, or ``now()`` compared with ``min``, ``max`` or ``last`` of ``timestamp``: then time
    changes its answer only when ``now`` crosses an event's time moved by a fixed offset,
    which a sweep over the events table by time finds (streaming).

    >>> from audiences.rules import parse_rule
    >>> tree = parse_rule("seen < now() AND max(timestamp) < now() - INTERVAL 7 DAY").tree
    >>> [event_clock(node) for node in tree.find_all(exp.CurrentTimestamp)]
    [False, True]
    """
    return isinstance(clock, exp.CurrentTimestamp) and _windowed(clock)


_TIME_OF = ("min", "max", "last")


def _windowed(clock: exp.Expr) -> bool:
    """``now() ± INTERVAL n UNIT`` (fixed units) compared with ``timestamp ± INTERVAL`` inside
    an aggregate's filter, or with ``min``/``max``/``last(timestamp)`` outside."""
    shifted = clock
    while isinstance(shifted.parent, exp.Add | exp.Sub) and shifted.parent.this is shifted:
        interval = shifted.parent.expression
        if (
            not isinstance(interval, exp.Interval)
            or interval.text("unit").upper() in _CALENDAR_UNITS
        ):
            return False
        shifted = shifted.parent
    comparison = shifted.parent
    if not isinstance(comparison, _CLOCK_COMPARISONS):
        return False
    others = [op for op in comparison.iter_expressions() if op is not shifted]
    if isinstance(comparison, exp.Between) and shifted is not comparison.this:
        others = [comparison.this]  # a bound: compared with the value between, not the other
    inside = clock.find_ancestor(*BEHAVIOURAL) is not None
    return bool(others) and all(_event_time(_unshifted(op), inside=inside) for op in others)


_CALENDAR_UNITS = frozenset({"MONTH", "YEAR", "QUARTER"})
_CLOCK_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)


def _unshifted(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
        if node.expression.text("unit").upper() in _CALENDAR_UNITS:
            return node
        node = node.this
    return node


def _event_time(node: exp.Expr, *, inside: bool) -> bool:
    if inside:
        return isinstance(node, EventField) and node.name == "timestamp"
    if not isinstance(node, Aggregate) or node.name not in _TIME_OF:
        return False
    argument = node.expression
    return isinstance(argument, EventField) and argument.name == "timestamp"


def _absolute(node: exp.Expr) -> bool:
    """Whether an aggregate's filter bounds ``timestamp`` by a fixed time rather than now()."""
    where = node.args.get("where")
    if where is None:
        return False
    for comparison in where.find_all(exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between):
        times = [op for op in comparison.iter_expressions() if op is not comparison.this]
        on_time = isinstance(comparison.this, EventField) and comparison.this.name == "timestamp"
        if on_time and any(op.find(exp.CurrentTimestamp) is None for op in times):
            return True
    return False

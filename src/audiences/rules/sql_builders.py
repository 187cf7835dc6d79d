"""Engine-specific SQL for the nodes whose meaning sqlglot's generators do not already match."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import sqlglot
from sqlglot import exp

from audiences.rules.dialect import Attr
from audiences.rules.event_semantics import FLOAT_SUM_LIMIT, MICRO
from audiences.rules.kinds import Kind
from audiences.rules.nodes import operands
from audiences.rules.sql_semantics import lower as lower_ascii

ColumnHook = Callable[[str], exp.Expr]
"""Attribute path -> the engine expression that reads it."""
AudienceHook = Callable[[str], exp.Expr]
"""Audience key -> a boolean engine expression (e.g. ``pid IN (...)``)."""

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = UPPER.lower()
_STANDARD_AGGREGATES = {
    "count": "COUNT(:x)",
    "count_distinct": "COUNT(DISTINCT :x)",
    "sum": "SUM(:x)",
    "sum_integer": "SUM(:x)",
    "avg": "CAST(AVG(:x) AS DOUBLE)",
    "avg_integer": "CAST(AVG(:x) AS DOUBLE)",
    "min": "MIN(:x)",
    "max": "MAX(:x)",
}
_LIMIT, _MICRO = f"{FLOAT_SUM_LIMIT:.0f}", f"{MICRO:.0f}"
_SPLIT = "4294967296"
"""2**32: an exact integer sum is turned into a double as ``hi * 2**32 + lo`` (``hi = s >> 32``
arithmetic, ``lo = s & (2**32 - 1)``), both parts exact as doubles, so that the one rounding is
that IEEE addition's (correct, ties to even) for any sum below 2**85 in magnitude."""
_MICRO_UNITS = (
    f"CASE WHEN ABS(CAST(:x AS DOUBLE)) <= {_LIMIT} THEN CAST(FLOOR(CAST(:x AS DOUBLE)"
    f" * CAST({_MICRO} AS DOUBLE) + CAST(0.5 AS DOUBLE)) AS BIGINT) END"
)
_LIST_GUARD = "CASE WHEN :l IS NULL OR :x IS NULL THEN NULL ELSE COALESCE({test}, FALSE) END"


@dataclass(frozen=True)
class Spelling:
    """How one engine spells what the builders below need: one row of :data:`SPELLINGS`.

    Differences between engines live here, as sqlglot keeps one table per dialect; the builders
    read their target's row and hold no branch on a dialect's name.
    """

    timestamp: str
    """A UTC instant (``:t``, a text or a date) as the engine's time-zone-aware timestamp."""
    like_escape: bool
    """Whether LIKE must be told that backslash escapes (``ESCAPE '\\'``)."""
    ascii_case: bool
    """Whether ``lower``/``upper`` must be narrowed to ASCII letters (TRANSLATE)."""
    text_order_collation: bool
    """Whether ordering comparisons of text need ``COLLATE "C"`` to order by code point."""
    starts_with: str
    ends_with: str
    contains: str
    widen_dates: str | None
    """How a date given to ``contains`` or ``extract`` is read as a timestamp (``:t``), where
    it must be (ClickHouse has no hour of a ``Date``); None where it need not."""
    regexp_dot_all: bool
    """Whether a regexp must ask itself for ``.`` to match a newline (``(?s)``)."""
    lists: Mapping[str, str]
    """List tests: ``:l`` the list, ``:x`` the value or list; ``:a`` and ``:y`` the same read
    as the list functions take them (see ``list_reads``)."""
    list_reads: Mapping[Kind, str]
    """The type each operand of a list function is cast to, by its kind: ClickHouse stores a
    list as a Variant (an Array cannot be NULL), which its array functions do not take, and
    finds no common type for an integer and a list of doubles. Empty: no casts."""
    list_filters: Mapping[str, str]
    """List tests (as ``lists``) that may be FALSE where the value is NULL, written where only
    a TRUE answer counts (``to_sql(filter_only=True)``, at the top of AND/OR chains): without
    the NULL guard, which on ClickHouse reads the whole Variant column again. Empty: the
    guarded forms everywhere."""
    list_columns: Mapping[Kind, str]
    """The subcolumn through which list functions read a stored list attribute, by its kind:
    ClickHouse's one-type Variant has its array as a subcolumn (``tags.`Array(String)```),
    which the array functions take as it is, where a cast of the Variant (``list_reads``)
    costs about as much again as the test. NULL stays the guard's business: the subcolumn
    of a NULL list is empty. Empty: attributes are read as any other operand."""
    days_between: str
    date_part: bool
    """Whether EXTRACT is written as DATE_PART (see :func:`extract`)."""
    bigint: bool
    """Whether integer literals in arithmetic must be widened to 64 bits explicitly."""
    nested: str
    """How a dotted attribute path reads: ``struct`` fields, or ``json`` text."""
    aggregates: Mapping[str, str]
    """Aggregates over events (``:x`` the argument): NULL over no values, ``avg`` a double,
    ``sum_integer`` and ``avg_integer`` those of an INTEGER, summed exactly (wider than 64 bits
    where the engine's own sum would wrap around)."""
    micro_units: str
    """A FLOAT value ``:x`` as whole micro-units, ``floor(x * 1e6 + 0.5)`` in double arithmetic
    cast to a 64-bit integer; NULL beyond ``FLOAT_SUM_LIMIT`` (see ``event_semantics``)."""
    exact_sum: str
    """The exact sum of micro-units ``:u`` (wider than 64 bits), NULL over no values."""
    exact_double: str
    """The exact integer sum ``:s`` as the double nearest it (ties to even), where a plain cast
    of a 128-bit integer is not rounded correctly (DuckDB, ClickHouse): ``hi * 2**32 + lo``."""
    date: str = "DATE"
    """The engine's calendar date type (ClickHouse's ``Date`` stops at 2149: ``Date32``, which
    sqlglot would cast to without ``Nullable``, so a NULL would fail the cast)."""
    checked_integers: tuple[str, str] | None = None
    """How integer ``+``, ``-``, ``*`` and negation are kept from wrapping around: each operand
    widened by the first template, the result narrowed back by the second, which fails the
    query on overflow (ClickHouse wraps Int64 silently, where Python, DuckDB and PostgreSQL
    do not). None where the engine raises by itself."""
    widen_mixed_numbers: bool = False
    """Whether integers beside doubles in ``coalesce`` must be cast to doubles: ClickHouse
    has no common type of Int64 and Float64 (it makes a Variant, which comparisons and
    array functions refuse)."""
    numbers_in_as_equalities: bool = False
    """Whether ``IN`` over numbers is written as equalities: ClickHouse looks numbers up in
    a hash set, where -0.0 is not 0.0."""


SPELLINGS: dict[str, Spelling] = {
    "duckdb": Spelling(
        timestamp="CAST(:t AS TIMESTAMPTZ)",
        like_escape=True,
        ascii_case=True,
        text_order_collation=False,
        starts_with="starts_with(:a, :b)",
        ends_with="ends_with(:a, :b)",
        contains="contains(:a, :b)",
        widen_dates=None,
        regexp_dot_all=True,
        lists={
            "list_contains": _LIST_GUARD.format(test="LIST_CONTAINS(:l, :x)"),
            "list_has_any": "LIST_HAS_ANY(:l, :x)",
            "list_has_all": "LIST_HAS_ALL(:l, :x)",
        },
        list_reads={},
        list_filters={},
        list_columns={},
        days_between="DATE_DIFF('DAY', :start, :end)",
        date_part=True,
        bigint=True,
        nested="struct",
        aggregates=_STANDARD_AGGREGATES,
        micro_units=_MICRO_UNITS,
        exact_sum="SUM(:u)",
        exact_double=(
            f"CAST(:s >> 32 AS DOUBLE) * CAST({_SPLIT} AS DOUBLE)"
            f" + CAST(:s & {int(_SPLIT) - 1} AS DOUBLE)"
        ),
    ),
    "postgres": Spelling(
        timestamp="CAST(:t AS TIMESTAMPTZ)",
        like_escape=True,
        ascii_case=True,
        text_order_collation=True,
        starts_with="starts_with(:a, :b)",
        ends_with="RIGHT(:a, LENGTH(:b)) = :b",
        contains="STRPOS(:a, :b) > 0",
        widen_dates="CAST(:t AS TIMESTAMP)",
        regexp_dot_all=False,
        lists={
            "list_contains": _LIST_GUARD.format(test="ARRAY_POSITION(:l, :x) IS NOT NULL"),
            "list_has_any": _LIST_GUARD.format(test=":l && :x"),
            "list_has_all": _LIST_GUARD.format(test=":l @> :x"),
        },
        list_reads={},
        list_filters={},
        list_columns={},
        days_between="CAST((:end - :start) AS BIGINT)",
        date_part=False,
        bigint=True,
        nested="json",
        aggregates={
            **_STANDARD_AGGREGATES,
            "avg": "CAST(AVG(:x) AS DOUBLE PRECISION)",
            "avg_integer": "CAST(AVG(:x) AS DOUBLE PRECISION)",
        },
        micro_units=_MICRO_UNITS,
        exact_sum="SUM(:u)",  # numeric
        exact_double="CAST(:s AS DOUBLE)",  # numeric to double is correctly rounded
    ),
    "clickhouse": Spelling(
        timestamp="toDateTime64(:t, 6, 'UTC')",
        like_escape=False,
        ascii_case=False,
        text_order_collation=False,
        starts_with="startsWith(:a, :b)",
        ends_with="endsWith(:a, :b)",
        contains="positionUTF8(:a, :b) > 0",
        widen_dates="toDateTime64(:t, 6, 'UTC')",
        regexp_dot_all=True,
        lists={
            "list_contains": _LIST_GUARD.format(test="has(:a, :y)"),
            # hasAny/hasAll ignore NULL items' null flags (a NULL item matches '' or 0);
            # has() does not, so each value is looked up with it.
            "list_has_any": _LIST_GUARD.format(test="arrayExists(v -> has(:a, v), :y)"),
            "list_has_all": _LIST_GUARD.format(test="arrayAll(v -> has(:a, v), :y)"),
        },
        list_reads={
            Kind.STRING_LIST: "Array(Nullable(String))",
            Kind.NUMBER_LIST: "Array(Nullable(Float64))",
            Kind.INTEGER: "Nullable(Float64)",
            Kind.FLOAT: "Nullable(Float64)",
        },
        # A NULL list's subcolumn is empty, so has() is FALSE there; a NULL value must still
        # be refused, since has() finds NULL items in a list literal.
        list_filters={"list_contains": "(:x IS NOT NULL AND has(:a, :y))"},
        list_columns={Kind.STRING_LIST: "Array(String)", Kind.NUMBER_LIST: "Array(Float64)"},
        days_between="DATE_DIFF('DAY', :start, :end)",
        date_part=False,
        bigint=False,
        nested="struct",
        aggregates={
            "count": "count(:x)",
            "count_distinct": "uniqExact(:x)",
            "sum": "sumOrNull(:x)",
            # Int64 sums into Int64 and wraps around; Python, DuckDB and PostgreSQL are exact.
            "sum_integer": "sumOrNull(toInt128(:x))",
            "avg": "avgOrNull(:x)",
            "avg_integer": "avgOrNull(toInt128(:x))",
            "min": "minOrNull(:x)",
            "max": "maxOrNull(:x)",
        },
        micro_units=(
            f"CASE WHEN abs(toFloat64(:x)) <= {_LIMIT} THEN toInt64(floor(toFloat64(:x)"
            f" * toFloat64({_MICRO}) + toFloat64(0.5))) END"
        ),
        exact_sum="sumOrNull(toInt128(:u))",  # a sum of Int64 would wrap
        exact_double=(
            f"toFloat64(bitShiftRight(:s, 32)) * toFloat64({_SPLIT})"
            f" + toFloat64(bitAnd(:s, {int(_SPLIT) - 1}))"
        ),
        date="Nullable(Date32)",
        checked_integers=("toInt128(:x)", "accurateCast(:x, 'Nullable(Int64)')"),
        widen_mixed_numbers=True,
        numbers_in_as_equalities=True,
    ),
}
"""Each dialect a profile engine runs (DuckDB; PostgreSQL and ClickHouse next, issue #14) and
how it spells the nodes below. A dialect no engine runs is not offered."""


@dataclass(frozen=True)
class Target:
    """Everything a builder needs besides the node: engine, hooks, reference time, node kinds."""

    dialect: str
    column: ColumnHook
    audience: AudienceHook
    now: datetime | None
    """The reference time, or None for the bound parameter ``$now`` (see ``NOW_PARAMETER``)."""
    kinds: Mapping[int, Kind]
    filtering: frozenset[int] = frozenset()
    """The original nodes whose NULL may read as FALSE (see ``to_sql(filter_only=True)``)."""

    def kind(self, node: exp.Expr) -> Kind:
        """The kind validation inferred for an original node."""
        return self.kinds.get(id(node), Kind.UNKNOWN)

    @property
    def spelling(self) -> Spelling:
        """How the target engine spells things."""
        return SPELLINGS[self.dialect]

    @property
    def date_type(self) -> exp.DataType:
        """The engine's calendar date type."""
        return exp.DataType.build(self.spelling.date, dialect=self.dialect)

    def build(self, text: str, **nodes: exp.Expr) -> exp.Expr:
        """One of the spelling's templates, filled with nodes (see :func:`template`)."""
        return template(text, self.dialect, **nodes)


def template(text: str, dialect: str, **nodes: exp.Expr) -> exp.Expr:
    """Parse a fixed SQL template and put expression nodes in its ``:name`` placeholders.

    User values only ever enter as nodes, so sqlglot quotes them; no text is pasted.
    """
    return exp.replace_placeholders(_parsed(text, dialect), **nodes)  # a copy: transform copies


@lru_cache(maxsize=256)
def _parsed(text: str, dialect: str) -> exp.Expr:
    # Templates are this module's fixed texts, so each is parsed once per process; callers get
    # a copy, never the cached tree.
    return sqlglot.parse_one(text, read=dialect)


def keep(node: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """The node as sqlglot prints it."""
    return new


def timestamp_literal(moment: datetime, dialect: str) -> exp.Expr:
    """A UTC instant as a typed literal of the engine's time-zone-aware timestamp type."""
    text = exp.Literal.string(moment.astimezone(UTC).isoformat(sep=" "))
    return template(SPELLINGS[dialect].timestamp, dialect, t=text)


def _date_to_timestamp(node: exp.Expr, dialect: str) -> exp.Expr:
    return template(SPELLINGS[dialect].timestamp, dialect, t=node)


def coerce_operands(original: exp.Expr, new: exp.Expr, target: Target) -> None:
    """Where dates meet timestamps, read each date as midnight UTC (as the Python back end)."""
    kinds = [target.kind(op) for op in operands(original)]
    if not (Kind.TIMESTAMP in kinds and Kind.DATE in kinds):
        return
    for before, after in zip(operands(original), operands(new), strict=True):
        if target.kind(before) is Kind.DATE:
            after.replace(_date_to_timestamp(after.copy(), target.dialect))


def comparison(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Dates read as timestamps; on PostgreSQL, text ordering by code point (``COLLATE "C"``)."""
    coerce_operands(original, new, target)
    if isinstance(new, exp.In) and _numbers_as_equalities(original, target):
        tests = [exp.EQ(this=new.this.copy(), expression=value) for value in new.expressions]
        return exp.Paren(this=exp.or_(*tests))
    ordering = not isinstance(original, exp.EQ | exp.NEQ | exp.In)
    texts = any(target.kind(op) is Kind.STRING for op in operands(original))
    if target.spelling.text_order_collation and ordering and texts:
        # One collated operand decides the comparison's collation (and BETWEEN's bounds may
        # not carry a COLLATE clause of their own).
        first = operands(new)[0]
        first.replace(
            exp.Collate(this=first.copy(), expression=exp.to_identifier("C", quoted=True))
        )
    return new


def _numbers_as_equalities(original: exp.Expr, target: Target) -> bool:
    numeric = target.kind(original.this) in (Kind.INTEGER, Kind.FLOAT)
    return numeric and target.spelling.numbers_in_as_equalities


def like(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Backslash escapes ``%`` and ``_`` everywhere; engines that need it are told so."""
    if target.spelling.like_escape:
        return exp.Escape(this=new, expression=exp.Literal.string("\\"))
    return new


def ilike(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Case-insensitive LIKE folds ASCII letters only, the same on every engine."""
    pattern = exp.Literal.string(lower_ascii(new.expression.name))
    folded = exp.Like(
        this=ascii_case(original, exp.Lower(this=new.this), target), expression=pattern
    )
    return like(original, folded, target)


def ascii_case(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """``lower``/``upper`` of ASCII letters only: engines disagree on the rest of Unicode."""
    if not target.spelling.ascii_case:
        return new
    source, dest = (UPPER, LOWER) if isinstance(new, exp.Lower) else (LOWER, UPPER)
    return exp.func("translate", new.this, exp.Literal.string(source), exp.Literal.string(dest))


def arithmetic(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """A date moved by an interval stays a date (engines would widen it to a timestamp);
    integers overflow loudly everywhere (``Spelling.checked_integers``)."""
    if target.kind(original) is Kind.DATE:
        return exp.Cast(this=exp.Paren(this=new), to=target.date_type)
    checked = target.spelling.checked_integers
    if checked is None or target.kind(original) is not Kind.INTEGER:
        return new
    wide, narrow = checked
    for operand in operands(new):
        operand.replace(target.build(wide, x=operand.copy()))
    return target.build(narrow, x=new)


def divide(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """True division, NULL when dividing by zero (PostgreSQL would raise, DuckDB give inf)."""
    return exp.Div(
        this=exp.Cast(this=new.this, to=exp.DataType.build("DOUBLE")),
        expression=exp.Nullif(this=new.expression, expression=exp.Literal.number(0)),
    )


def modulo(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Truncated remainder (sign of the dividend), NULL for a zero divisor."""
    divisor = exp.Nullif(this=new.expression, expression=exp.Literal.number(0))
    return exp.Mod(this=new.this, expression=divisor)


def coalesce(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Mixed dates and timestamps read as timestamps; mixed integers and doubles as doubles
    where the engine needs telling (``Spelling.widen_mixed_numbers``)."""
    coerce_operands(original, new, target)
    if target.spelling.widen_mixed_numbers and target.kind(original) is Kind.FLOAT:
        for before, after in zip(operands(original), operands(new), strict=True):
            if target.kind(before) is Kind.INTEGER:
                after.replace(exp.Cast(this=after.copy(), to=exp.DataType.build("DOUBLE")))
    return new


def starts_with(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Prefix test."""
    return target.build(target.spelling.starts_with, a=new.this, b=new.expression)


def ends_with(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Suffix test (PostgreSQL has no ``ends_with``: it compares the right-hand characters)."""
    return target.build(target.spelling.ends_with, a=new.this, b=new.expression)


def contains(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Substring test."""
    _widen_date(original, new, target)
    return target.build(target.spelling.contains, a=new.this, b=new.expression)


def _widen_date(original: exp.Expr, new: exp.Expr, target: Target) -> None:
    widen = target.spelling.widen_dates
    if widen is not None and target.kind(original.expression) is Kind.DATE:
        new.set("expression", target.build(widen, t=new.expression))


def regexp(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Unanchored RE2 search in which ``.`` matches a newline, as PostgreSQL's ``~`` does."""
    pattern = new.expression
    if target.spelling.regexp_dot_all:
        pattern = exp.Literal.string("(?s)" + pattern.name)
    return exp.RegexpLike(this=new.this, expression=pattern)


def _list_function(name: str) -> Callable[[exp.Expr, exp.Expr, Target], exp.Expr]:
    def build(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
        pairs = zip(operands(original), operands(new), strict=True)
        reads = [_read(before, after, target) for before, after in pairs]
        spelling = target.spelling
        text = spelling.list_filters.get(name) if id(original) in target.filtering else None
        return target.build(
            text or spelling.lists[name], l=new.this, x=new.expression, a=reads[0], y=reads[1]
        )

    return build


def _read(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """An operand of a list function as the engine's list functions take it: a stored list
    through its subcolumn (``Spelling.list_columns``), else itself unless the spelling casts
    its kind (``Spelling.list_reads``)."""
    subcolumn = target.spelling.list_columns.get(target.kind(original))
    if subcolumn is not None and isinstance(original, Attr):
        return exp.Dot(this=new.copy(), expression=exp.to_identifier(subcolumn, quoted=True))
    read = target.spelling.list_reads.get(target.kind(original))
    if read is None:
        return new.copy()
    return exp.Cast(this=new.copy(), to=exp.DataType.build(read, dialect=target.dialect))


list_contains = _list_function("list_contains")
list_has_any = _list_function("list_has_any")
list_has_all = _list_function("list_has_all")


def in_audience(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Membership of another audience, as the caller's hook expresses it."""
    return exp.Paren(this=target.audience(original.this.name))


def days_between(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Whole UTC calendar days from start to end."""
    start, end = (exp.Cast(this=e, to=target.date_type) for e in (new.this, new.expression))
    return target.build(target.spelling.days_between, start=start, end=end)


def extract(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Date parts of the UTC time; the day of the week counts from Sunday = 0 everywhere."""
    _widen_date(original, new, target)
    if target.spelling.date_part:
        # DATE_PART rather than EXTRACT: sqlglot's DuckDB EXTRACT logs a time-zone warning for
        # TIMESTAMPTZ literals, which does not apply to a UTC session.
        part = exp.Literal.string(original.this.name.lower())
        return exp.Anonymous(this="DATE_PART", expressions=[part, new.expression])
    return new


NOW_PARAMETER = "now"
"""The named parameter that holds the reference time in SQL compiled without a fixed ``now``."""


def now(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """The caller's reference time, so SQL and Python agree on "now"."""
    if target.now is None:
        return _now_parameter()
    return timestamp_literal(target.now, target.dialect)


def today(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """The UTC date of the reference time."""
    date = target.date_type
    if target.now is None:
        # The engine session runs in UTC, so the cast takes the UTC date, as below.
        return exp.Cast(this=_now_parameter(), to=date)
    day = target.now.astimezone(UTC).date().isoformat()
    return exp.Cast(this=exp.Literal.string(day), to=date)


def _now_parameter() -> exp.Expr:
    placeholder = exp.Placeholder(this=NOW_PARAMETER)
    return exp.Cast(this=placeholder, to=exp.DataType.build("TIMESTAMPTZ"))


def cast(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Typed literals and conversions, in the engine's own types."""
    assert isinstance(original, exp.Cast)
    if original.to.this is exp.DType.TIMESTAMPTZ:
        if isinstance(original.this, exp.Literal):
            return timestamp_literal(datetime.fromisoformat(original.this.name), target.dialect)
        return _date_to_timestamp(new.this, target.dialect)
    return new


def attribute(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """The caller's column for an attribute path."""
    return target.column(original.name)


def literal(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Floats become exact doubles (engines would otherwise read ``0.1`` as a decimal)."""
    assert isinstance(original, exp.Literal)
    if original.is_string:
        return new
    if original.this.lstrip("-").isdigit():
        return bigint(original, new, target) if _constant_arithmetic(original) else new
    return exp.Cast(this=exp.Literal.string(original.this), to=exp.DataType.build("DOUBLE"))


_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Mod)


def _constant_arithmetic(literal: exp.Expr) -> bool:
    """An integer literal in arithmetic with another literal: engines would compute in 32 bits."""
    node = literal.parent if isinstance(literal.parent, exp.Neg) else literal
    parent = node.parent
    if not isinstance(parent, _ARITHMETIC):
        return False
    other = parent.expression if node is parent.this else parent.this
    other = other.this if isinstance(other, exp.Neg) else other
    return isinstance(other, exp.Literal)


def bigint(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """64-bit integers, as in Python: PostgreSQL and DuckDB would use 32 bits here."""
    if not target.spelling.bigint:
        return new
    return exp.Cast(this=new, to=exp.DataType.build("BIGINT"))


def array(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """List literals; number lists are typed as lists of doubles."""
    if target.kind(original) is not Kind.NUMBER_LIST:
        return new
    return exp.Cast(this=new, to=exp.DataType.build("DOUBLE[]", dialect="duckdb"))


def interval(original: exp.Expr, new: exp.Expr, target: Target) -> exp.Expr:
    """Intervals as each engine spells them; a negative amount is quoted (sqlglot drops the
    sign of ``INTERVAL -1 MONTH`` when it writes PostgreSQL's single-string form)."""
    amount = new.this
    if isinstance(amount, exp.Neg):
        new.set("this", exp.Literal.string(f"-{amount.this.name}"))
    return new


def default_column(dialect: str, kinds: Mapping[str, Kind]) -> ColumnHook:
    """Columns of the attribute's name; a dotted path is a struct field (JSON on PostgreSQL)."""

    def column(path: str) -> exp.Expr:
        head, *rest = path.split(".")
        base: exp.Expr = exp.column(exp.to_identifier(head, quoted=True))
        if not rest:
            return base
        if SPELLINGS[dialect].nested == "struct":
            return exp.Dot.build([base, *(exp.to_identifier(p, quoted=True) for p in rest)])
        keys = [exp.Literal.string(p) for p in rest]
        text = exp.Anonymous(this="jsonb_extract_path_text", expressions=[base, *keys])
        return _typed(text, kinds.get(path, Kind.STRING))

    return column


_PG_TYPES = {
    Kind.INTEGER: "BIGINT",
    Kind.FLOAT: "DOUBLE",
    Kind.BOOLEAN: "BOOLEAN",
    Kind.TIMESTAMP: "TIMESTAMPTZ",
    Kind.DATE: "DATE",
}


def _typed(node: exp.Expr, kind: Kind) -> exp.Expr:
    name = _PG_TYPES.get(kind)
    return exp.Cast(this=node, to=exp.DataType.build(name)) if name else node


def no_audience(key: str) -> exp.Expr:
    """The default audience hook: a rule that names an audience needs the caller's hook."""
    raise ValueError(f"in_audience({key!r}) needs an `audience` hook to compile to SQL")

"""Value kinds and type inference: what each node of a rule evaluates to, given a schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum

from sqlglot import exp

from audiences.schemas.attributes import AttributeType


class Kind(StrEnum):
    """The type of a rule node's value: an attribute type or one of the rule-only kinds."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    STRING_LIST = "string_list"
    NUMBER_LIST = "number_list"
    JSON = "json"
    INTERVAL = "interval"
    NULL = "null"
    UNKNOWN = "unknown"
    """A node whose type could not be told (an unknown attribute): never reported twice."""


NUMBERS = frozenset({Kind.INTEGER, Kind.FLOAT})
TIMES = frozenset({Kind.TIMESTAMP, Kind.DATE})
LISTS = {Kind.STRING_LIST: Kind.STRING, Kind.NUMBER_LIST: Kind.FLOAT}
Typing = Callable[[Sequence[Kind]], Kind | None]
"""Result kind for the operand kinds, or None when the operands do not fit."""


def of_attribute(kind: AttributeType) -> Kind:
    """The kind of an attribute of the given schema type (its value may be a plain string)."""
    return Kind(str(kind))


def family(kind: Kind) -> str:
    """Kinds that compare with each other share a family (integer with float, date with time).

    >>> family(Kind.INTEGER) == family(Kind.FLOAT)
    True
    """
    if kind in NUMBERS:
        return "number"
    return "time" if kind in TIMES else kind.value


def _known(kinds: Sequence[Kind]) -> list[Kind]:
    return [k for k in kinds if k not in (Kind.NULL, Kind.UNKNOWN)]


def unify(kinds: Sequence[Kind]) -> Kind | None:
    """The common kind of values that must agree (comparison operands, coalesce arguments)."""
    known = _known(kinds)
    if not known:
        return Kind.UNKNOWN if Kind.UNKNOWN in kinds else Kind.NULL
    if len({family(k) for k in known}) > 1:
        return None
    if known[0] in NUMBERS:
        return Kind.INTEGER if set(known) == {Kind.INTEGER} else Kind.FLOAT
    if known[0] in TIMES:
        return Kind.DATE if set(known) == {Kind.DATE} else Kind.TIMESTAMP
    return known[0]


def comparison(kinds: Sequence[Kind]) -> Kind | None:
    """Typing of ``= <> < <= > >= BETWEEN IN``: scalars of one family."""
    common = unify(kinds)
    if common is None or common in (*LISTS, Kind.JSON, Kind.INTERVAL):
        return None
    return Kind.BOOLEAN


def fixed(*params: frozenset[Kind], result: Kind) -> Typing:
    """Typing of an operator whose operand ``i`` must have a kind in ``params[i]``."""

    def check(kinds: Sequence[Kind]) -> Kind | None:
        ok = all(
            k in allowed or k in (Kind.NULL, Kind.UNKNOWN)
            for k, allowed in zip(kinds, params, strict=True)
        )
        return result if ok else None

    return check


def arithmetic(kinds: Sequence[Kind]) -> Kind | None:
    """Typing of ``+ - *``: numbers, or a date/timestamp moved by an interval."""
    known = _known(kinds)
    if all(k in NUMBERS for k in known):
        return unify(kinds) if known else Kind.NULL
    times = [k for k in known if k in TIMES]
    if len(times) == 1 and len(known) == 2 and Kind.INTERVAL in known:
        return times[0]
    return None


def numeric(kinds: Sequence[Kind]) -> Kind | None:
    """``*`` and unary ``-``: numbers only."""
    known = _known(kinds)
    return unify(kinds) if all(k in NUMBERS for k in known) else None


def division(kinds: Sequence[Kind]) -> Kind | None:
    """``/`` is true division: numbers in, float out."""
    return (
        Kind.FLOAT if all(k in NUMBERS or k in (Kind.NULL, Kind.UNKNOWN) for k in kinds) else None
    )


def list_membership(kinds: Sequence[Kind]) -> Kind | None:
    """``list_contains(list, value)``: the value has the list's element kind."""
    lst, value = kinds
    element = LISTS.get(lst)
    if lst in (Kind.NULL, Kind.UNKNOWN):
        return Kind.BOOLEAN
    if element is None or (
        value not in (Kind.NULL, Kind.UNKNOWN) and family(value) != family(element)
    ):
        return None
    return Kind.BOOLEAN


def list_overlap(kinds: Sequence[Kind]) -> Kind | None:
    """``list_has_any / list_has_all(list, list)``: two lists of one element kind."""
    known = _known(kinds)
    if all(k in LISTS for k in known) and len(set(known)) <= 1:
        return Kind.BOOLEAN
    return None


def same_as_first(kinds: Sequence[Kind]) -> Kind | None:
    """``coalesce``: every argument of one kind; the result has it."""
    return unify(kinds)


STRING = frozenset({Kind.STRING})
NUMBER = NUMBERS
BOOLEAN = frozenset({Kind.BOOLEAN})
TIME = TIMES
ANY = frozenset(Kind)


def literal_kind(node: exp.Expr) -> Kind | None:
    """The kind of a literal node, or None if the node is not a literal."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return Kind.STRING
        return Kind.INTEGER if node.this.lstrip("-").isdigit() else Kind.FLOAT
    if isinstance(node, exp.Boolean):
        return Kind.BOOLEAN
    if isinstance(node, exp.Null):
        return Kind.NULL
    if isinstance(node, exp.Interval):
        return Kind.INTERVAL
    return None


def attribute_kind(path: str, schema: Mapping[str, AttributeType]) -> Kind | None:
    """The kind of an attribute path: declared, or JSON when it reaches into a JSON attribute."""
    if path in schema:
        return of_attribute(schema[path])
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = schema.get(".".join(parts[:cut]))
        if parent is AttributeType.JSON:
            return Kind.JSON
    return None

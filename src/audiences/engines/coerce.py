"""Attribute values checked against their declared type before any engine stores them.

Every engine runs the same table, so a value refused by DuckDB is refused by PostgreSQL too, and
the error names the attribute instead of failing a whole batch inside the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson

from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import FLOAT_SUM_LIMIT

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class TypeMismatchError(ValueError):
    """A value contradicts the declared type of its attribute; the message says how."""


class OutOfRangeError(TypeMismatchError):
    """A value of the right type that its property cannot hold (a FLOAT event property beyond
    ``FLOAT_SUM_LIMIT``): reported as ``property_out_of_range``."""


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def to_string(value: object) -> str:
    """Strings only: a number where text is declared is more likely a mistake than intent.
    A string that is not valid Unicode (a lone surrogate, which JSON's ``\\ud800`` escape
    can carry) is refused: no engine can store it."""
    if isinstance(value, str) and valid_unicode(value):
        return value
    raise TypeMismatchError(f"expected a string, got {_describe(value)}")


def valid_unicode(text: str) -> bool:
    """No lone surrogate: the text can be encoded, so an engine can store it."""
    if text.isascii():  # the common case, checked in C without building bytes
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def to_integer(value: object) -> int:
    """Integers, integral floats and integer strings (as CSV imports send), within 64 bits."""
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str):
        try:
            result = int(value.strip())
        except ValueError:
            result = None
    if result is None or not INT64_MIN <= result <= INT64_MAX:
        raise TypeMismatchError(f"expected an integer, got {_describe(value)}")
    return result


def to_float(value: object) -> float:
    """Finite numbers and numeric strings; NaN and infinities compare differently in SQL."""
    result: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:  # an integer past ~1.8e308, which Python code can pass
            result = None
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise TypeMismatchError(f"expected a finite number, got {_describe(value)}")
    return result


def to_event_float(value: object) -> float:
    """A FLOAT event property value: a finite number (:func:`to_float`) at most
    ``FLOAT_SUM_LIMIT`` (1e12) in magnitude, which ``sum`` and ``avg`` can add up exactly."""
    result = to_float(value)
    if not abs(result) <= FLOAT_SUM_LIMIT:
        raise OutOfRangeError(f"at most 1e12 in magnitude (sums add micro-units), got {result!r}")
    return result


def to_boolean(value: object) -> bool:
    """Booleans and the strings 'true' / 'false' in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeMismatchError(f"expected a boolean, got {_describe(value)}")


def to_timestamp(value: object) -> datetime:
    """Datetimes and ISO 8601 strings; a naive one is taken as UTC, the result is UTC. A
    time whose UTC moment lies outside years 1-9999 (``9999-12-31T23:00:00-02:00``) is
    refused: no datetime, so no engine, can hold it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TypeMismatchError(
                f"expected an ISO 8601 timestamp, got {_describe(value)}"
            ) from None
    if not isinstance(value, datetime):
        raise TypeMismatchError(f"expected a timestamp, got {_describe(value)}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise TypeMismatchError(f"expected a time UTC can hold, got {value.isoformat()}") from None


def to_date(value: object) -> date:
    """Dates and ISO 8601 date strings (YYYY-MM-DD); a datetime is refused, not truncated."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise TypeMismatchError(f"expected an ISO 8601 date, got {_describe(value)}") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise TypeMismatchError(f"expected a date, got {_describe(value)}")


def to_string_list(value: object) -> list[str]:
    """A list (or tuple) of strings, no nulls inside."""
    if isinstance(value, list | tuple):
        try:
            joined = "".join(value)  # refuses any item that is not a string, at C speed
        except TypeError:
            pass
        else:
            if valid_unicode(joined):
                return list(value)
    raise TypeMismatchError(f"expected a list of strings, got {_describe(value)}")


def to_number_list(value: object) -> list[float]:
    """A list (or tuple) of finite numbers, no nulls inside."""
    if not isinstance(value, list | tuple):
        raise TypeMismatchError(f"expected a list of numbers, got {_describe(value)}")
    try:
        return [_number_item(item) for item in value]
    except TypeMismatchError:
        raise TypeMismatchError(f"expected a list of numbers, got {_describe(value)}") from None


def _number_item(item: object) -> float:
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise TypeMismatchError("not a number")
    return to_float(item)


def to_json(value: object) -> str:
    """Any JSON-serialisable value, stored as its JSON text."""
    return dump_json(value)


def dump_json(value: object) -> str:
    """JSON text of a value, or ``TypeMismatchError`` naming what cannot be serialised."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as error:
        raise TypeMismatchError(f"expected a JSON value: {error}") from None


COERCERS: dict[AttributeType, Callable[[object], Any]] = {
    AttributeType.STRING: to_string,
    AttributeType.INTEGER: to_integer,
    AttributeType.FLOAT: to_float,
    AttributeType.BOOLEAN: to_boolean,
    AttributeType.TIMESTAMP: to_timestamp,
    AttributeType.DATE: to_date,
    AttributeType.STRING_LIST: to_string_list,
    AttributeType.NUMBER_LIST: to_number_list,
    AttributeType.JSON: to_json,
}
"""One checker per attribute type: the value in the form engines bind, or ``TypeMismatchError``."""


def coerce(attribute_type: AttributeType, value: object) -> Any:
    """The value converted for its declared type; ``TypeMismatchError`` if it contradicts it."""
    return COERCERS[attribute_type](value)

"""Helpers the generated Python predicates call: SQL semantics that need more than an operator."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def lower(text: str) -> str:
    """ASCII-only lower case (engines disagree on the rest of Unicode).

    >>> lower("ÄBC")
    'Äbc'
    """
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def upper(text: str) -> str:
    """ASCII-only upper case."""
    return text.upper() if text.isascii() else text.translate(_ASCII_UPPER)


def mod(a: int, b: int) -> int:
    """SQL's remainder: it takes the sign of the dividend (Python's takes the divisor's).

    >>> mod(-7, 3), mod(7, -3)
    (-1, 1)
    """
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


@dataclass(frozen=True)
class Interval:
    """An ``INTERVAL n UNIT``: months (calendar, clamped to the month's end) or a fixed span."""

    months: int = 0
    span: timedelta = timedelta()

    def __radd__(self, moment: Any) -> Any:
        return self._move(moment, 1)

    def __add__(self, moment: Any) -> Any:
        return self._move(moment, 1)

    def __rsub__(self, moment: Any) -> Any:
        return self._move(moment, -1)

    def _move(self, moment: date, sign: int) -> date:
        if self.months:
            moment = add_months(moment, sign * self.months)
        return moment + sign * self.span


_UNITS = {"WEEK": timedelta(weeks=1), "DAY": timedelta(days=1), "HOUR": timedelta(hours=1)}
_UNITS |= {"MINUTE": timedelta(minutes=1), "SECOND": timedelta(seconds=1)}


def interval(amount: int, unit: str) -> Interval:
    """The Interval of ``INTERVAL amount unit``.

    >>> datetime(2024, 1, 31, tzinfo=UTC) + interval(1, "MONTH")
    datetime.datetime(2024, 2, 29, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if unit in ("YEAR", "MONTH"):
        return Interval(months=amount * (12 if unit == "YEAR" else 1))
    return Interval(span=amount * _UNITS[unit])


def add_months(moment: date, months: int) -> date:
    """Move by whole months, clamping the day to the target month's length (as SQL engines do)."""
    total = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(total, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def timestamp(value: Any) -> datetime | None:
    """A profile's timestamp as an aware UTC datetime (naive means UTC; ISO text is read)."""
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is UTC:
        return value  # already in the form the rest produces (and the common case)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value if isinstance(value, datetime) else midnight(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def day(value: Any) -> date | None:
    """A profile's date as a date (ISO text is read; a datetime gives its UTC date)."""
    if value is None or type(value) is date:
        return value
    if isinstance(value, str):
        return date.fromisoformat(value)
    return timestamp(value).astimezone(UTC).date()  # type: ignore[union-attr]


def midnight(value: date) -> datetime:
    """A date read as a timestamp: its midnight in UTC."""
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def days_between(start: date, end: date) -> int:
    """UTC calendar days from start to end (dates or timestamps)."""
    return (_utc_date(end) - _utc_date(start)).days


def _utc_date(value: date) -> date:
    return value.astimezone(UTC).date() if isinstance(value, datetime) else value


def extract(unit: str, value: date) -> int:
    """``EXTRACT(unit FROM value)`` on the UTC time; DOW counts from Sunday = 0."""
    moment = value.astimezone(UTC) if isinstance(value, datetime) else value
    return _EXTRACT[unit](moment)


_EXTRACT: dict[str, Callable[[Any], int]] = {
    "YEAR": lambda m: m.year,
    "QUARTER": lambda m: (m.month - 1) // 3 + 1,
    "MONTH": lambda m: m.month,
    "WEEK": lambda m: m.isocalendar()[1],
    "DAY": lambda m: m.day,
    "DOW": lambda m: m.isoweekday() % 7,
    "DOY": lambda m: m.timetuple().tm_yday,
    "HOUR": lambda m: getattr(m, "hour", 0),
    "MINUTE": lambda m: getattr(m, "minute", 0),
}


def values(items: Iterable[Any]) -> frozenset[Any]:
    """The non-NULL elements of a list, as a set (list functions ignore NULL elements)."""
    return frozenset(item for item in items if item is not None)


def dig(profile: Any, path: tuple[str, ...]) -> Any:
    """A nested attribute (``address.country``): its dotted name first (the form the server
    stores, and a column of that name in SQL), else the path walked through nested objects;
    missing or non-object on the way is NULL."""
    flat = profile.get(".".join(path))
    if flat is not None:
        return flat
    current = profile
    for key in path:
        current = current.get(key) if hasattr(current, "get") else None
        if current is None:
            return None
    return current


def and3(*items: bool | None) -> bool | None:
    """SQL AND of already computed values: FALSE wins, then NULL."""
    return False if False in items else (None if None in items else True)


def or3(*items: bool | None) -> bool | None:
    """SQL OR of already computed values: TRUE wins, then NULL."""
    return True if True in items else (None if None in items else False)


def now_utc() -> datetime:
    """The default clock."""
    return datetime.now(UTC)

"""The per-type checks every engine runs before storing a value."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from audiences.engines.coerce import COERCERS, TypeMismatchError, coerce
from audiences.schemas.attributes import AttributeType as T


def test_every_type_has_a_checker() -> None:
    assert set(COERCERS) == set(T)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (T.STRING, "x", "x"),
        (T.INTEGER, 5, 5),
        (T.INTEGER, 5.0, 5),
        (T.INTEGER, " 12 ", 12),
        (T.FLOAT, 2, 2.0),
        (T.FLOAT, "2.5", 2.5),
        (T.BOOLEAN, "False", False),
        (T.TIMESTAMP, "2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        (T.TIMESTAMP, datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC)),
        (
            T.TIMESTAMP,
            datetime(2024, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))),
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
        (T.DATE, "2024-02-29", date(2024, 2, 29)),
        (T.STRING_LIST, ("a", "b"), ["a", "b"]),
        (T.NUMBER_LIST, [1, 2.5], [1.0, 2.5]),
        (T.JSON, {"a": [1, None]}, '{"a":[1,null]}'),
    ],
)
def test_accepted_values(kind: T, value: object, expected: object) -> None:
    assert coerce(kind, value) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (T.STRING, 5),
        (T.INTEGER, True),
        (T.INTEGER, 1.5),
        (T.INTEGER, "1.5"),
        (T.INTEGER, 2**63),
        (T.FLOAT, float("nan")),
        (T.FLOAT, "inf"),
        (T.FLOAT, False),
        (T.FLOAT, 10**400),  # float() overflows: a mismatch, not an OverflowError
        (T.BOOLEAN, 1),
        (T.BOOLEAN, "yes"),
        (T.TIMESTAMP, "yesterday"),
        (T.TIMESTAMP, 1700000000),
        (T.TIMESTAMP, "9999-12-31T23:00:00-02:00"),  # past what UTC can hold
        (T.TIMESTAMP, "0001-01-01T00:00:00+01:00"),
        (T.DATE, datetime(2024, 1, 1)),
        (T.DATE, "2024-13-01"),
        (T.STRING_LIST, "vip"),
        (T.STRING_LIST, ["a", None]),
        (T.NUMBER_LIST, [1, True]),
        (T.NUMBER_LIST, [float("inf")]),
        (T.NUMBER_LIST, [10**400]),
        (T.JSON, {1, 2}),
    ],
)
def test_contradicting_values_are_refused(kind: T, value: object) -> None:
    with pytest.raises(TypeMismatchError):
        coerce(kind, value)

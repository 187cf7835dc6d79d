"""Hypothesis strategies for behavioural rules and the event histories they read.

Event times cluster around the window boundaries the rules use (exactly on a bound, a
microsecond either side), properties are NULL or missing often, and amounts have two decimals,
which doubles do not hold exactly: some histories are planted so that their amounts' decimal sum
or mean is exactly one of the thresholds the rules compare with (61.35, 406.13, 48.59 and 83.93
average exactly 150, as doubles added in one order 150.00000000000003), where adding doubles
in different orders could tip a comparison (issue #13).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from audiences.schemas.attributes import AttributeType as T
from audiences.schemas.events import Event, EventSchema

NOW = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
ATTRIBUTES = {"age": T.INTEGER, "plan": T.STRING}
PROPERTIES = {
    "amount": T.FLOAT,
    "qty": T.INTEGER,
    "sku": T.STRING,
    "coupon": T.BOOLEAN,
    "shipped": T.TIMESTAMP,
}
NAMES = ("view", "order", "signup", "cancel")
ORDER = "event = 'order'"
EVENTS = EventSchema(PROPERTIES, frozenset(NAMES))
DAYS = (0, 1, 2, 7, 30, 90)
"""Window lengths the rules use, in days; event times sit on and around them."""
THRESHOLDS = ("0", "1", "2", "3", "7.5", "-1", "0.3", "150", "600")
"""The numbers aggregates are compared with; planted histories sum or average to them exactly."""
SHIFTS = (timedelta(0), timedelta(microseconds=1), timedelta(days=1), timedelta(days=29))
"""How far the clock moves forward between two evaluations of one history."""
TINY = timedelta(microseconds=1)


def _moment(rng: random.Random) -> datetime:
    if rng.random() < 0.6:
        bound = NOW - timedelta(days=rng.choice(DAYS)) + rng.choice(SHIFTS)
        return bound + rng.choice((-TINY, timedelta(0), TINY, timedelta(hours=-5)))
    return NOW - timedelta(seconds=rng.randrange(0, 130 * 86400))


def _property(rng: random.Random, name: str) -> Any:
    pools: dict[str, Any] = {
        "amount": lambda: rng.randrange(-800, 40000) / 100,
        "qty": lambda: rng.randrange(-2, 12),
        "sku": lambda: rng.choice(("a", "b", "c", "é", "B")),
        "coupon": lambda: rng.random() < 0.5,
        "shipped": lambda: _moment(rng),
    }
    return pools[name]()


def _planted(rng: random.Random) -> list[Event]:
    """Orders whose two-decimal amounts sum, or average, to a threshold exactly in decimal."""
    cents = round(float(rng.choice(THRESHOLDS)) * 100)
    if rng.random() < 0.3:
        amounts = [6135, 40613, 4859, 8393]  # mean 150.00 exactly (the benchmark's profile)
    else:
        size = rng.choice((2, 3, 4, 5))
        total = cents * (size if rng.random() < 0.5 else 1)
        amounts = [rng.randrange(-800, 40000) for _ in range(size - 1)]
        amounts.append(total - sum(amounts))
    rng.shuffle(amounts)
    return [
        Event("order", _moment(rng), {"amount": amount / 100, "qty": rng.randrange(-2, 12)})
        for amount in amounts
    ]


def history(rng: random.Random) -> list[Event]:
    """One profile's events, oldest first (ties in time included)."""
    if rng.random() < 0.15:
        return sorted(_planted(rng), key=lambda event: event.timestamp)
    events = []
    for _ in range(rng.choice((0, 1, 2, 3, 5, 8))):
        properties = {name: _property(rng, name) for name in PROPERTIES if rng.random() < 0.7}
        events.append(Event(rng.choice(NAMES), _moment(rng), properties))
    if events and rng.random() < 0.2:
        twin = events[0]
        events.append(Event(rng.choice(NAMES), twin.timestamp, {"amount": 1.0, "sku": "a"}))
    return sorted(events, key=lambda event: event.timestamp)


def _batch(seed: int, size: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    profiles = []
    for pid in range(1, size + 1):
        profile: dict[str, Any] = {"pid": pid, "$events": history(rng)}
        if rng.random() < 0.8:
            profile["age"] = rng.choice((None, 18, 30, 45))
        if rng.random() < 0.8:
            profile["plan"] = rng.choice((None, "pro", "free"))
        profiles.append(profile)
    return profiles


def batches(size: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """``size`` profiles with events, built from a drawn seed (cheap to draw and shrink)."""
    return st.integers(0, 2**32).map(lambda seed: _batch(seed, size))


_UNITS = st.sampled_from(["DAY", "HOUR"])


def _days() -> st.SearchStrategy[int]:
    return st.sampled_from(DAYS)


def windows() -> st.SearchStrategy[str]:
    """A condition on ``timestamp``: relative (last N, between offsets) or absolute."""
    last = st.builds(
        lambda op, n, unit: f"timestamp {op} now() - INTERVAL {n} {unit}",
        st.sampled_from([">=", ">", "<", "<="]),
        _days(),
        _UNITS,
    )
    between = st.builds(
        lambda a, b: (
            f"timestamp BETWEEN now() - INTERVAL {max(a, b)} DAY"
            f" AND now() - INTERVAL {min(a, b)} DAY"
        ),
        _days(),
        _days(),
    )
    absolute = st.builds(
        lambda op, n: f"timestamp {op} TIMESTAMP '{(NOW - timedelta(days=n)).isoformat()}'",
        st.sampled_from([">=", "<"]),
        _days(),
    )
    return st.one_of(last, between, absolute)


def event_conditions() -> st.SearchStrategy[str]:
    """A condition on one event: its name, its properties (NULLs included), its time."""
    leaf = st.one_of(
        st.sampled_from(NAMES).map(lambda n: f"event = '{n}'"),
        st.just("event IN ('order', 'view')"),
        st.just("event <> 'view'"),
        st.builds(
            lambda op, v: f"amount {op} {v}", st.sampled_from(["<", ">="]), st.integers(-1, 90)
        ),
        st.sampled_from(
            ["qty > 3", "qty IS NULL", "sku = 'a'", "sku < 'b'", "coupon", "NOT coupon"]
        ),
        st.sampled_from(["shipped >= now() - INTERVAL 2 DAY", "shipped IS NOT NULL"]),
        windows(),
    )
    return st.one_of(
        leaf,
        st.builds(lambda a, b: f"{a} AND {b}", leaf, leaf),
        st.builds(lambda a, b: f"({a} OR {b})", leaf, leaf),
        leaf.map(lambda a: f"NOT ({a})"),
    )


def _filtered(call: str, where: str | None) -> str:
    return call if where is None else f"{call} FILTER (WHERE {where})"


_NUMERIC = ["count(*)", "count(sku)", "count(DISTINCT sku)", "count(DISTINCT qty)"]
_NUMERIC += ["sum(amount)", "sum(qty)", "avg(amount)", "avg(qty)", "min(qty)", "max(amount)"]
_NUMERIC += ["last(qty)", "last(amount)"]


def aggregates() -> st.SearchStrategy[str]:
    """An aggregate compared with a value: every aggregate, every kind of argument."""
    where = st.none() | event_conditions()
    numeric = st.builds(
        lambda call, w, op, v: f"{_filtered(call, w)} {op} {v}",
        st.sampled_from(_NUMERIC),
        where,
        st.sampled_from(["=", ">=", ">", "<", "<>"]),
        st.sampled_from(THRESHOLDS),
    )
    times = st.builds(
        lambda call, w, op, n: f"{_filtered(call, w)} {op} now() - INTERVAL {n} DAY",
        st.sampled_from(["min(timestamp)", "max(timestamp)", "last(shipped)", "max(shipped)"]),
        where,
        st.sampled_from([">=", "<", ">"]),
        _days(),
    )
    text = st.builds(
        lambda call, w, v: f"{_filtered(call, w)} = '{v}'",
        st.sampled_from(["last(sku)", "min(sku)", "max(sku)", "last(event)"]),
        where,
        st.sampled_from(["a", "b", "order"]),
    )
    other = st.builds(
        lambda call, w, test: f"{_filtered(call, w)}{test}",
        st.sampled_from(["last(coupon)", "count(coupon)", "sum(amount)", "avg(qty)"]),
        where,
        st.sampled_from(["", " IS NULL", " IS NOT NULL"]),
    ).filter(lambda t: t.startswith("last(coupon)") or t.endswith("NULL"))
    arithmetic = st.builds(
        lambda w: f"{_filtered('sum(amount)', w)} / {_filtered('count(*)', w)} > 10", where
    )
    on_threshold = st.builds(  # where planted histories' amounts sum or average exactly
        lambda call, w, op, v: f"{_filtered(call, w)} {op} {v}",
        st.sampled_from(["sum(amount)", "avg(amount)"]),
        st.sampled_from([None, ORDER]),
        st.sampled_from(["=", ">=", ">", "<", "<>"]),
        st.sampled_from(THRESHOLDS),
    )
    return st.one_of(numeric, times, text, other, arithmetic, on_threshold)


def sequences() -> st.SearchStrategy[str]:
    """A sequence of two or three steps, with or without ``within`` and a window."""
    steps = st.lists(event_conditions(), min_size=2, max_size=3)
    within = st.none() | st.sampled_from(["INTERVAL 1 DAY", "INTERVAL 30 DAY", "INTERVAL 5 HOUR"])
    return st.builds(
        lambda s, w, f: _filtered(
            "sequence(" + ", ".join([*s, *([f"within => {w}"] if w else [])]) + ")", f
        ),
        steps,
        within,
        st.none() | windows(),
    )


def behavioural_rules() -> st.SearchStrategy[str]:
    """A behavioural condition combined with attribute conditions under AND / OR / NOT."""
    behaviour = st.one_of(aggregates(), aggregates(), sequences())
    attribute = st.sampled_from(["age >= 30", "plan = 'pro'", "age IS NULL", "NOT plan = 'free'"])
    return st.one_of(
        behaviour,
        st.builds(lambda a, b: f"{a} AND {b}", behaviour, attribute),
        st.builds(lambda a, b: f"{a} OR {b}", behaviour, attribute),
        st.builds(lambda a, b: f"NOT ({a}) OR {b}", behaviour, behaviour),
        st.builds(lambda a, b: f"({a}) AND NOT ({b})", behaviour, behaviour),
    )

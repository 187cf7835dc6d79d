"""Hypothesis strategies: well-typed rule texts and batches of awkward profiles."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from audiences.schemas.attributes import AttributeType as T

SCHEMA = {
    "s": T.STRING,
    "t": T.STRING,
    "n": T.INTEGER,
    "m": T.INTEGER,
    "f": T.FLOAT,
    "b": T.BOOLEAN,
    "ts": T.TIMESTAMP,
    "ts2": T.TIMESTAMP,
    "d": T.DATE,
    "tags": T.STRING_LIST,
    "nums": T.NUMBER_LIST,
    "address.country": T.STRING,
}
NOW = datetime(2024, 2, 29, 23, 30, 15, 250_000, tzinfo=UTC)

# --- values ----------------------------------------------------------------------------------

ALPHABET = "aAbBzZ09 %_\\'é É ßİΣσ🇺🇸\n中-"
TEXTS = st.text(alphabet=ALPHABET, max_size=5) | st.sampled_from(["", "a", "A", "ab", "b%", "ß"])
INTEGERS = st.sampled_from([0, 1, -1, 2, 3, -7, 7, 30, 2**31 - 1, -(2**31)]) | st.integers(
    -100, 100
)
FLOATS = st.sampled_from(
    [0.0, -0.0, 0.1, 0.5, 1.5, -2.5, 3.0, 30.0, 1e15, 2.0**53, 1e-05, 0.30000000000000004]
)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
DATES = st.sampled_from(
    [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2023, 12, 31),
        date(2024, 2, 1),
        date(1970, 1, 1),
        date(2099, 12, 31),
        date(2024, 2, 28),
    ]
) | st.dates(min_value=date(1970, 1, 1), max_value=date(2100, 1, 1))


@st.composite
def timestamps(draw: st.DrawFn) -> datetime:
    day = draw(DATES)
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=draw(st.sampled_from([0, 1, 3600 * 23 + 59 * 60 + 59, 43200])),
        microseconds=draw(st.sampled_from([0, 1, 999_999])),
    )
    return moment.astimezone(draw(st.sampled_from(ZONES)))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


POOLS: dict[str, list[Any]] = {}


def _pools() -> dict[str, list[Any]]:
    """Awkward values per attribute, drawn once from the strategies above (fixed seed)."""
    if POOLS:
        return POOLS
    rng = random.Random(20240229)
    texts = ["", "a", "A", "ab", "b%", "ß", "É", "a_b", "a\\%", "🇺🇸", "中", " a ", "a\n", "Σσ", "İ"]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5))) for _ in range(40)]
    ints = [0, 1, -1, 2, 3, -7, 7, 30, 2**31 - 1, -(2**31)] + [
        rng.randint(-100, 100) for _ in range(20)
    ]
    floats = [0.0, -0.0, 0.1, 0.5, 1.5, -2.5, 3.0, 30.0, 1e15, 2.0**53, 1e-05, 0.30000000000000004]
    floats += [float(i) for i in ints[:10]]
    dates = [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2023, 12, 31),
        date(2024, 2, 1),
        date(1970, 1, 1),
        date(2099, 12, 31),
        date(2024, 2, 28),
    ]
    dates += [date(1970, 1, 1) + timedelta(days=rng.randint(0, 47000)) for _ in range(20)]
    stamps = [
        (
            datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(seconds=s, microseconds=u)
        ).astimezone(z)
        for d in dates
        for s in (0, 86399, 43200)
        for u in (0, 999_999)
        for z in ZONES
    ]
    POOLS.update(texts=texts, ints=ints, floats=floats, dates=dates, stamps=rng.sample(stamps, 120))
    return POOLS


def _value(rng: random.Random, name: str) -> Any:
    pools = _pools()
    simple = {
        "s": "texts",
        "t": "texts",
        "n": "ints",
        "m": "ints",
        "f": "floats",
        "d": "dates",
        "ts": "stamps",
        "ts2": "stamps",
    }
    if name in simple:
        return rng.choice(pools[simple[name]])
    if name == "b":
        return rng.random() < 0.5
    if name in ("tags", "nums"):
        pool = pools["texts" if name == "tags" else "floats"]
        return [None if rng.random() < 0.1 else rng.choice(pool) for _ in range(rng.randint(0, 3))]
    return {} if rng.random() < 0.2 else {"country": rng.choice([None, *pools["texts"][:10]])}


NAMES = ["s", "t", "n", "m", "f", "b", "ts", "ts2", "d", "tags", "nums", "address"]


def _batch(seed: int, size: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    batch = []
    for pid in range(1, size + 1):
        profile: dict[str, Any] = {"pid": pid}
        for name in NAMES:
            roll = rng.random()
            if roll < 0.15:
                continue  # missing key: NULL
            profile[name] = None if roll < 0.3 else _value(rng, name)
        batch.append(profile)
    return batch


def profile_batches(size: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """``size`` profiles (pids 1..size) built from a drawn seed: NULLs, missing keys, empty
    lists, Unicode, boundary numbers, several time zones and month ends. Building a batch
    from a seed keeps each example cheap; the failure report shows the profile."""
    return st.integers(0, 2**32).map(lambda seed: _batch(seed, size))


# --- nested attributes, as a profile write sends them ----------------------------------------

NESTED_SCHEMA = {**{f"p.{name}": kind for name, kind in SCHEMA.items()}, "p.j": T.JSON}
"""Every attribute of SCHEMA one level deeper (``address.country`` two), and a json one."""


def _wire(value: Any) -> Any:
    """A value as JSON carries it: dates and timestamps as ISO text; lists without NULL items
    (a list attribute refuses them)."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [item for item in value if item is not None]
    return value


def _nested_write(rng: random.Random, profile: dict[str, Any]) -> dict[str, Any]:
    """A profile of :func:`profile_batches` as a write of NESTED_SCHEMA: each attribute nested
    (``{"p": {"s": …}}``), dotted (``{"p.s": …}``) or half of each (``{"p.address":
    {"country": …}}``), at random; NULL given as null or left out."""
    leaves: dict[str, Any] = {}
    for name, value in profile.items():
        if name == "address" and isinstance(value, dict):
            if "country" in value:
                leaves["address.country"] = value["country"]
        elif name != "pid":
            leaves[name] = _wire(value)
    roll = rng.random()
    if roll < 0.6:
        leaves["j"] = {"k": [1, {"x": None}]} if roll < 0.3 else None
    write: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for name, value in leaves.items():
        head, _, rest = name.partition(".")
        form = rng.random()
        if form < 0.4:
            write[f"p.{name}"] = value
        elif form < 0.7 or not rest:
            target = nested
            for part in name.split(".")[:-1]:
                target = target.setdefault(part, {})
            target[name.split(".")[-1]] = value
        else:
            write.setdefault(f"p.{head}", {})[rest] = value
    if nested:
        write["p"] = nested
    return write


def nested_batches(size: int) -> st.SearchStrategy[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """``size`` (profile, write) pairs: a profile of :func:`profile_batches` and the write that
    stores it under NESTED_SCHEMA, in nested and dotted forms mixed."""

    def build(seed: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        rng = random.Random(seed)
        return [(p, _nested_write(rng, p)) for p in _batch(seed, size)]

    return st.integers(0, 2**32).map(build)


# --- rules -----------------------------------------------------------------------------------

PATTERN_TEXT = st.text(alphabet="aAbé%_ß", max_size=4).map(lambda s: s.replace("\\", ""))
LIKE_PATTERNS = PATTERN_TEXT | st.sampled_from(
    ["a%", "%a", "%a%", "%", "", "a\\%", "\\_%", "_", "a_b%"]
)
REGEXES = st.sampled_from(
    ["a", "^a", "a$", "a.b", "[ab]+", "^(a|b)*$", "é", "\\d", "z?a", ".", "ß|Σ", "^$"]
)
INTERVALS = st.sampled_from(
    [
        "1 DAY",
        "30 DAY",
        "1 MONTH",
        "12 MONTH",
        "1 YEAR",
        "2 HOUR",
        "90 MINUTE",
        "1 WEEK",
        "-1 MONTH",
    ]
)
UNITS = st.sampled_from(["YEAR", "QUARTER", "MONTH", "WEEK", "DAY", "DOW", "DOY", "HOUR", "MINUTE"])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _float_literal(value: float) -> str:
    return repr(abs(value)) if value >= 0 and repr(value) != "-0.0" else f"-{abs(value)!r}"


STRING_LITERALS = TEXTS.map(_quote)
INT_LITERALS = st.integers(-40, 40).map(str) | st.sampled_from(["0", "2147483647", "-2147483648"])
FLOAT_LITERALS = FLOATS.map(_float_literal)


def strings(depth: int) -> st.SearchStrategy[str]:
    base = st.sampled_from(["s", "t", "address.country"]) | STRING_LITERALS
    if depth <= 0:
        return base
    inner = strings(depth - 1)
    return base | st.one_of(
        inner.map(lambda x: f"lower({x})"),
        inner.map(lambda x: f"upper({x})"),
        inner.map(lambda x: f"trim({x})"),
        st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
    )


def integers(depth: int) -> st.SearchStrategy[str]:
    base = st.sampled_from(["n", "m"]) | INT_LITERALS
    if depth <= 0:
        return base
    inner = integers(depth - 1)
    return base | st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-"]), inner).map(
            lambda p: f"({p[0]} {p[1]} {p[2]})"
        ),
        st.tuples(st.sampled_from(["n", "m"]), st.integers(-3, 3)).map(
            lambda p: f"({p[0]} * {p[1]})"
        ),
        st.tuples(inner, inner).map(lambda p: f"({p[0]} % {p[1]})"),
        inner.map(lambda x: f"(- {x})"),
        strings(0).map(lambda x: f"length({x})"),
        st.tuples(UNITS, times(0)).map(lambda p: f"extract({p[0]} from {p[1]})"),
        st.tuples(times(0), times(0)).map(lambda p: f"date_diff('day', {p[0]}, {p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
    )


def numbers(depth: int) -> st.SearchStrategy[str]:
    base = st.just("f") | FLOAT_LITERALS | integers(depth)
    if depth <= 0:
        return base
    inner = numbers(depth - 1)
    return base | st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "/"]), inner).map(
            lambda p: f"({p[0]} {p[1]} {p[2]})"
        ),
        st.tuples(st.just("f"), FLOAT_LITERALS).map(lambda p: f"({p[0]} * {p[1]})"),
        integers(0).map(lambda x: f"CAST({x} AS DOUBLE)"),
        st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
    )


def times(depth: int) -> st.SearchStrategy[str]:
    literal = st.one_of(
        timestamps().map(lambda t: f"TIMESTAMP '{t.isoformat()}'"),
        DATES.map(lambda d: f"DATE '{d.isoformat()}'"),
    )
    base = st.sampled_from(["ts", "ts2", "d", "now()", "current_date"]) | literal
    if depth <= 0:
        return base
    return base | st.tuples(times(depth - 1), st.sampled_from(["+", "-"]), INTERVALS).map(
        lambda p: f"({p[0]} {p[1]} INTERVAL {p[2]})"
    )


COMPARE = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])


def _comparison(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(values, COMPARE, values).map(lambda p: f"{p[0]} {p[1]} {p[2]}")


def leaves() -> st.SearchStrategy[str]:
    string, number, moment = strings(1), numbers(1), times(1)
    return st.one_of(
        _comparison(string),
        _comparison(number),
        _comparison(moment),
        st.tuples(
            st.sampled_from(
                ["s", "t", "n", "f", "b", "ts", "d", "tags", "nums", "address.country"]
            ),
            st.booleans(),
        ).map(lambda p: f"{p[0]} IS {'NOT ' if p[1] else ''}NULL"),
        st.tuples(string, st.booleans(), st.lists(STRING_LITERALS, min_size=1, max_size=4)).map(
            lambda p: f"{p[0]} {'NOT ' if p[1] else ''}IN ({', '.join(p[2])})"
        ),
        st.tuples(number, st.lists(INT_LITERALS | FLOAT_LITERALS, min_size=1, max_size=4)).map(
            lambda p: f"{p[0]} IN ({', '.join(p[1])})"
        ),
        st.tuples(number, number, number).map(lambda p: f"{p[0]} BETWEEN {p[1]} AND {p[2]}"),
        st.tuples(string, STRING_LITERALS, STRING_LITERALS).map(
            lambda p: f"{p[0]} NOT BETWEEN {p[1]} AND {p[2]}"
        ),
        st.tuples(moment, moment, moment).map(lambda p: f"{p[0]} BETWEEN {p[1]} AND {p[2]}"),
        st.tuples(
            string, st.sampled_from(["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]), LIKE_PATTERNS
        ).map(lambda p: f"{p[0]} {p[1]} {_quote(p[2])}"),
        st.tuples(st.sampled_from(["starts_with", "ends_with", "contains"]), string, string).map(
            lambda p: f"{p[0]}({p[1]}, {p[2]})"
        ),
        st.tuples(string, REGEXES).map(lambda p: f"regexp_matches({p[0]}, {_quote(p[1])})"),
        st.tuples(st.just("tags"), string).map(lambda p: f"list_contains({p[0]}, {p[1]})"),
        st.tuples(st.just("nums"), number).map(lambda p: f"list_contains({p[0]}, {p[1]})"),
        st.tuples(
            st.sampled_from(["list_has_any", "list_has_all"]),
            st.lists(STRING_LITERALS, min_size=1, max_size=3),
        ).map(lambda p: f"{p[0]}(tags, [{', '.join(p[1])}])"),
        st.tuples(
            st.sampled_from(["list_has_any", "list_has_all"]),
            st.lists(INT_LITERALS | FLOAT_LITERALS, min_size=1, max_size=3),
        ).map(lambda p: f"{p[0]}(nums, [{', '.join(p[1])}])"),
        st.sampled_from(
            ["in_audience('even')", "in_audience('odd')", "b", "TRUE", "FALSE", "NULL"]
        ),
        st.sampled_from(
            ["ts > now() - INTERVAL 30 DAY", "d >= current_date - INTERVAL 1 MONTH", "b = TRUE"]
        ),
        st.tuples(
            st.sampled_from(["b", "coalesce(b, FALSE)", "(n > 1)"]),
            st.sampled_from(["=", "<>"]),
            st.sampled_from(["TRUE", "FALSE", "b"]),
        ).map(lambda p: f"{p[0]} {p[1]} {p[2]}"),
    )


def conditions(depth: int = 3) -> st.SearchStrategy[str]:
    if depth <= 0:
        return leaves()
    inner = conditions(depth - 1)
    return st.one_of(
        leaves(),
        inner.map(lambda x: f"NOT ({x})"),
        st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(
            lambda p: f"({p[0]}) {p[1]} ({p[2]})"
        ),
        st.lists(inner, min_size=3, max_size=4).map(lambda xs: " AND ".join(f"({x})" for x in xs)),
    )


def rules() -> st.SearchStrategy[str]:
    """Rule texts that type-check against SCHEMA."""
    return conditions()

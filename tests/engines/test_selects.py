"""Selects on every engine checked against an independent Python computation, and each engine
under threads."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pyroaring import BitMap

from audiences import rules
from audiences.engines.base import ProfileEngine
from audiences.errors import InvalidParameter
from audiences.services.evaluation.compiled import engine_column
from tests.engines.conftest import SCHEMA, WS

Row = dict[str, Any]

COUNTRIES = ["US", "DE", "FR", "BR", None]
TAGS = ["vip", "beta", "churn-risk", "newsletter"]


def make_profiles(count: int, seed: int) -> list[tuple[str, Row]]:
    """Random profiles with missing values, so NULL handling is exercised."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    profiles = []
    for n in range(count):
        row: Row = {
            "country": rng.choice(COUNTRIES),
            "age": rng.choice([None, *range(16, 80)]),
            "lifetime_value": rng.choice([None, round(rng.uniform(0, 500), 2)]),
            "churned": rng.choice([True, False, None]),
            "tags": rng.choice([None, rng.sample(TAGS, rng.randint(0, 3))]),
            "signup_date": date(2020, 1, 1) + timedelta(days=rng.randint(0, 1500)),
            "last_seen": start + timedelta(hours=rng.randint(0, 5000)),
        }
        profiles.append((f"user-{n}", {k: v for k, v in row.items() if v is not None}))
    return profiles


def _ge(field: str, bound: Any) -> Callable[[Row], bool]:
    return lambda row: row.get(field) is not None and row[field] >= bound


PREDICATES: dict[str, tuple[str, Callable[[Row], bool]]] = {  # rule text, Python oracle
    "us": ("country = 'US'", lambda r: r.get("country") == "US"),
    "adults": ("age >= 30", _ge("age", 30)),
    "not_churned": ("NOT churned", lambda r: r.get("churned") is False),
    "vip": ("list_contains(tags, 'vip')", lambda r: "vip" in (r.get("tags") or [])),
    "rich_or_young": (
        "lifetime_value > 400 OR age < 20",
        lambda r: (r.get("lifetime_value") or 0) > 400 or (r.get("age") or 99) < 20,
    ),
    "no_country": ("country IS NULL", lambda r: r.get("country") is None),
    "eu_recent": (
        "country IN ('DE', 'FR') AND signup_date >= DATE '2023-01-01'",
        lambda r: r.get("country") in ("DE", "FR") and r["signup_date"] >= date(2023, 1, 1),
    ),
    "seen_late": (
        "last_seen > TIMESTAMP '2024-06-01 00:00:00+00'",
        lambda r: r["last_seen"] > datetime(2024, 6, 1, tzinfo=UTC),
    ),
}


def where(engine: ProfileEngine, text: str) -> str:
    """A rule's WHERE-SQL for the engine's dialect, as batch evaluation compiles it."""
    rule = rules.validate_rule(text, SCHEMA)
    return rules.to_sql(rule, engine.dialect, column=engine_column)  # type: ignore[arg-type]


@pytest.fixture
def loaded(engine: ProfileEngine) -> tuple[ProfileEngine, dict[int, Row]]:
    profiles = make_profiles(2000, seed=7)
    results = []
    for start in range(0, len(profiles), 500):
        results += engine.upsert_profiles(WS, profiles[start : start + 500])
    assert all(r.ok for r in results)
    return engine, {r.pid: row for r, (_, row) in zip(results, profiles, strict=True) if r.pid}


@pytest.mark.parametrize("key", PREDICATES)
def test_select_pids_matches_python(loaded: tuple[ProfileEngine, dict[int, Row]], key: str) -> None:
    engine, rows = loaded
    text, predicate = PREDICATES[key]
    expected = {pid for pid, row in rows.items() if predicate(row)}
    assert expected, "the data set should give every predicate members"
    assert set(engine.select_pids(WS, where(engine, text))) == expected


def test_select_many_equals_individual_selects(
    loaded: tuple[ProfileEngine, dict[int, Row]],
) -> None:
    engine, _ = loaded
    conditions = {key: where(engine, text) for key, (text, _) in PREDICATES.items()}
    many = engine.select_many(WS, conditions)
    assert list(many) == list(PREDICATES)
    for key, where_sql in conditions.items():
        assert many[key] == engine.select_pids(WS, where_sql)


def test_select_many_binds_each_predicates_parameters(
    loaded: tuple[ProfileEngine, dict[int, Row]],
) -> None:
    engine, rows = loaded
    many = engine.select_many(
        WS, {"a": "age > ?", "b": "country = ?", "c": "age < 20"}, {"a": [70], "b": ["BR"]}
    )
    assert set(many["a"]) == {pid for pid, row in rows.items() if _ge("age", 71)(row)}
    assert set(many["b"]) == {pid for pid, row in rows.items() if row.get("country") == "BR"}
    assert many["c"] == engine.select_pids(WS, "age < 20")


def test_threads_upserting_and_selecting(engine: ProfileEngine) -> None:
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        for round_ in range(10):
            batch = [(f"w{worker}-{n}", {"age": round_, "country": "US"}) for n in range(50)]
            batch.append(("shared", {"age": round_}))
            assert all(r.ok for r in engine.upsert_profiles(WS, batch))

    def reader() -> None:
        for _ in range(20):
            adults = engine.select_pids(WS, "age >= 0")
            assert len(adults) <= engine.count(WS) + 50 * 4
            engine.pids_for(WS, ["shared", "w0-1"])

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(lambda w=w: writer(w),)) for w in range(4)]
    threads += [threading.Thread(target=run, args=(reader,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert engine.count(WS) == 4 * 50 + 1
    # Every profile once, each with its own pid (a pid drawn by a writer that lost the race
    # to create "shared" may be skipped: pids are unique, not always consecutive).
    ids = ["shared", *(f"w{w}-{n}" for w in range(4) for n in range(50))]
    pids = engine.pids_for(WS, ids)
    assert None not in pids and len(set(pids)) == 201
    assert set(engine.select_pids(WS, "age = 9")) == set(pids)


def test_member_sets_join_under_their_alias(engine: ProfileEngine) -> None:
    results = engine.upsert_profiles(WS, [(f"m{i}", {"age": i}) for i in range(20)])
    pids = [result.pid for result in results if result.pid is not None]
    members = BitMap(pids[:8])
    both = engine.select_pids(
        WS, 'age >= 5 AND "m_vip".pid IS NOT NULL', memberships={"m_vip": members}
    )
    either = engine.select_pids(
        WS, 'age >= 15 OR "m_vip".pid IS NOT NULL', memberships={"m_vip": members}
    )
    outside = engine.select_pids(WS, '"m_vip".pid IS NULL', memberships={"m_vip": members})
    assert both == BitMap(pids[5:8])
    assert either == BitMap(pids[:8] + pids[15:])
    assert outside == BitMap(pids[8:])


@pytest.mark.parametrize("alias", ["vip", "m_VIP", "m_a;drop", "m_" + "x" * 61])
def test_unsafe_member_set_aliases_are_refused(engine: ProfileEngine, alias: str) -> None:
    with pytest.raises(InvalidParameter):
        engine.select_pids(WS, "true", memberships={alias: BitMap([1])})

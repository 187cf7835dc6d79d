"""The profile contract on every engine: schema, merge semantics, id map, deletes and selects."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from audiences.engines.base import HeldColumns, ProfileEngine
from audiences.errors import Conflict, InvalidParameter, Unprocessable, ValidationFailed
from audiences.schemas.attributes import AttributeType
from tests.engines.conftest import SCHEMA, WS
from tests.engines.kinds import Store


def test_engine_satisfies_the_protocol(store: Store, engine: ProfileEngine) -> None:
    assert isinstance(engine, ProfileEngine)
    assert engine.dialect == store.kind


def test_every_attribute_type_round_trips(engine: ProfileEngine) -> None:
    attributes = {
        "country": "US",
        "age": 31,
        "lifetime_value": 12.5,
        "churned": False,
        "last_seen": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        "signup_date": date(2020, 2, 29),
        "tags": ["vip", "beta"],
        "scores": [1, 2.5],
        "settings": {"theme": "dark", "nested": {"a": [1, None]}},
    }
    [result] = engine.upsert_profiles(WS, [("u1", attributes)])
    profile = engine.get_profile(WS, "u1")
    assert result.ok and result.created and profile is not None
    assert profile.pid == result.pid
    assert profile.attributes == {
        **attributes,
        "last_seen": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "scores": [1.0, 2.5],
    }
    assert profile.updated_at.tzinfo is not None


def test_strings_are_coerced_to_declared_types(engine: ProfileEngine) -> None:
    record = {
        "age": "42",
        "churned": "TRUE",
        "signup_date": "2021-03-04",
        "last_seen": "2024-01-01",
    }
    engine.upsert_profiles(WS, [("u1", record)])
    profile = engine.get_profile(WS, "u1")
    assert profile is not None
    assert profile.attributes == {
        "age": 42,
        "churned": True,
        "signup_date": date(2021, 3, 4),
        "last_seen": datetime(2024, 1, 1, tzinfo=UTC),
    }


def test_schema_is_read_back_from_the_columns(store: Store, engine: ProfileEngine) -> None:
    engine.close()
    reopened = store.open()
    assert reopened.attributes(WS) == SCHEMA
    assert reopened.attributes("other") == {}


def test_the_catalog_says_every_workspace_s_columns_at_once(
    store: Store, engine: ProfileEngine
) -> None:
    """``columns_of`` answers what ``attributes`` and ``event_properties`` answer, for many
    workspaces at once, from an engine that has loaded none of them; a workspace without
    tables holds nothing, and nothing is made for it."""
    engine.ensure_attributes("Beta-2", {"plan": AttributeType.STRING, "tags": SCHEMA["tags"]})
    engine.ensure_event_properties(WS, {"amount": AttributeType.FLOAT})
    engine.close()
    reopened = store.open()
    held = reopened.columns_of([WS, "Beta-2", "beta_2", "empty"])
    assert held == {
        WS: HeldColumns(SCHEMA, {"amount": AttributeType.FLOAT}),
        "Beta-2": HeldColumns({"plan": AttributeType.STRING, "tags": SCHEMA["tags"]}, {}),
        "beta_2": HeldColumns({}, {}),
        "empty": HeldColumns({}, {}),
    }
    assert list(held[WS].attributes) == list(SCHEMA)  # in column order
    assert reopened.attributes("Beta-2") == held["Beta-2"].attributes
    assert reopened.columns_of(["empty"]) == {"empty": HeldColumns({}, {})}
    assert reopened.columns_of([]) == {}
    with pytest.raises(InvalidParameter):
        reopened.columns_of(["no spaces"])


def test_adding_an_attribute_moves_fitting_extra_values(
    store: Store, engine: ProfileEngine
) -> None:
    engine.upsert_profiles(WS, [("a", {"plan": "pro", "x": 1}), ("b", {"plan": 7}), ("c", {})])
    plan = store.extra_text("plan")
    assert set(engine.select_pids(WS, f"{plan} = 'pro'")) == {1}
    engine.ensure_attributes(WS, {**SCHEMA, "plan": AttributeType.STRING})
    assert engine.attributes(WS)["plan"] is AttributeType.STRING
    assert set(engine.select_pids(WS, "plan = 'pro'")) == {1}
    assert set(engine.select_pids(WS, f"{plan} IS NOT NULL")) == {2}
    a, b = engine.get_profile(WS, "a"), engine.get_profile(WS, "b")
    assert a is not None and a.attributes == {"plan": "pro", "x": 1}
    # 7 does not fit a string: it stays in extra, hidden behind the declared name.
    assert b is not None and b.attributes == {}


def test_an_attribute_cannot_change_type(engine: ProfileEngine) -> None:
    with pytest.raises(Conflict) as caught:
        engine.ensure_attributes(WS, {"age": AttributeType.STRING})
    assert caught.value.code == "attribute_type_conflict"
    assert [error.location for error in caught.value.errors] == [("schema", "age")]
    assert engine.attributes(WS)["age"] is AttributeType.INTEGER


@pytest.mark.parametrize("name", ["pid", "extra", "Bad Name", "1st"])
def test_reserved_and_malformed_names_are_refused(engine: ProfileEngine, name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        engine.ensure_attributes(WS, {name: AttributeType.STRING})
    assert caught.value.errors[0].location == ("schema", name)
    assert name not in engine.attributes(WS)


def test_dotted_attribute_names_are_quoted_columns(engine: ProfileEngine) -> None:
    engine.ensure_attributes(WS, {"address.country": AttributeType.STRING})
    engine.upsert_profiles(WS, [("u1", {"address.country": "FR"})])
    assert set(engine.select_pids(WS, "\"address.country\" = 'FR'")) == {1}


def test_upsert_merges_into_what_is_stored(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("u1", {"country": "US", "age": 30, "tags": ["a"]})])
    [result] = engine.upsert_profiles(WS, [("u1", {"age": 31, "churned": True})])
    profile = engine.get_profile(WS, "u1")
    assert not result.created and result.pid == 1
    assert profile is not None
    assert profile.attributes == {"country": "US", "age": 31, "tags": ["a"], "churned": True}
    assert engine.count(WS) == 1


def test_none_clears_declared_and_extra_attributes(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("u1", {"country": "US", "age": 30, "color": "red", "k": 1})])
    engine.upsert_profiles(WS, [("u1", {"country": None, "color": None})])
    profile = engine.get_profile(WS, "u1")
    assert profile is not None and profile.attributes == {"age": 30, "k": 1}
    assert set(engine.select_pids(WS, "country IS NULL")) == {1}


def test_extra_stores_nested_objects_flat_and_merges_by_dotted_name(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("u1", {"prefs": {"a": 1, "b": {"c": 2}}, "n": 1})])
    engine.upsert_profiles(WS, [("u1", {"prefs": {"a": None}, "prefs.b.c": 3, "m": [1, None]})])
    profile = engine.get_profile(WS, "u1")
    assert profile is not None
    assert profile.attributes == {"prefs.b.c": 3, "n": 1, "m": [1, None]}


def test_a_name_given_nested_and_dotted_fails_its_record(engine: ProfileEngine) -> None:
    results = engine.upsert_profiles(WS, [("u1", {"a": {"b": 1}, "a.b": 2}), ("u2", {"a.b": 2})])
    assert [r.ok for r in results] == [False, True]
    assert results[0].errors[0].code == "attribute_repeated"


def test_strict_writes_refuse_undeclared_names_with_a_value(engine: ProfileEngine) -> None:
    engine.ensure_attributes(WS, {"addr.city": AttributeType.STRING})
    results = engine.upsert_profiles(
        WS,
        [("u1", {"addr": {"city": "Paris"}, "gone": None}), ("u2", {"addr": {"zip": "75001"}})],
        strict=True,
    )
    assert [r.ok for r in results] == [True, False]
    assert results[1].errors[0].code == "attribute_undeclared"
    assert results[1].errors[0].location == ("attributes", "addr.zip")


def test_a_bad_value_fails_its_record_and_the_rest_is_written(engine: ProfileEngine) -> None:
    results = engine.upsert_profiles(
        WS,
        [
            ("good", {"age": 5}),
            ("bad", {"age": "five", "country": 3, "tags": "vip"}),
            ("", {"age": 1}),
            ("also-good", {"tags": ["x"]}),
        ],
    )
    assert [r.ok for r in results] == [True, False, False, True]
    assert [e.location for e in results[1].errors] == [
        ("attributes", "age"),
        ("attributes", "country"),
        ("attributes", "tags"),
    ]
    assert {e.code for e in results[1].errors} == {"attribute_type_mismatch"}
    assert results[1].pid is None and results[1].external_id == "bad"
    assert results[2].errors[0].code == "external_id_invalid"
    assert engine.pids_for(WS, ["good", "bad", "also-good"]) == [1, None, 2]


def test_values_that_are_not_json_are_refused(engine: ProfileEngine) -> None:
    [result] = engine.upsert_profiles(WS, [("u1", {"things": {1, 2}})])
    assert not result.ok and result.errors[0].location == ("attributes", "things")
    assert engine.count(WS) == 0


def test_a_refused_record_leaves_the_stored_profile_alone(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("u1", {"age": 30})])
    [result] = engine.upsert_profiles(WS, [("u1", {"age": 31, "lifetime_value": "lots"})])
    profile = engine.get_profile(WS, "u1")
    assert not result.ok
    assert profile is not None and profile.attributes == {"age": 30}


def test_repeated_ids_in_one_batch_apply_in_order(engine: ProfileEngine) -> None:
    results = engine.upsert_profiles(
        WS, [("u1", {"age": 1, "country": "US"}), ("u2", {}), ("u1", {"age": 2, "x": 1})]
    )
    assert [(r.pid, r.created) for r in results] == [(1, True), (2, True), (1, False)]
    profile = engine.get_profile(WS, "u1")
    assert profile is not None and profile.attributes == {"age": 2, "country": "US", "x": 1}
    assert engine.count(WS) == 2


def test_undeclared_workspaces_read_as_empty(engine: ProfileEngine) -> None:
    assert engine.get_profile("nobody", "u1") is None
    assert engine.count("nobody") == 0
    assert set(engine.select_pids("nobody", "age > 1")) == set()
    assert engine.select_many("nobody", {"a": "age > 1"}) == {"a": BitMap()}
    assert engine.pids_for("nobody", ["u1"]) == [None]
    assert engine.external_ids_for("nobody", [1]) == [None]
    assert engine.delete_profile("nobody", "u1") is None


def test_workspaces_are_apart_even_when_ids_differ_only_in_case(store: Store) -> None:
    engine = store.open()
    engine.upsert_profiles("Acme", [("u1", {"n": 1})])
    engine.upsert_profiles("acme", [("u1", {"n": 2}), ("u2", {})])
    upper, lower = engine.get_profile("Acme", "u1"), engine.get_profile("acme", "u1")
    assert upper is not None and upper.attributes == {"n": 1}
    assert lower is not None and lower.attributes == {"n": 2}
    assert (engine.count("Acme"), engine.count("acme")) == (1, 2)


@pytest.mark.parametrize("workspace", ["", "a b", "x" * 65, 'a";DROP TABLE t;--'])
def test_unsafe_workspace_ids_are_refused(engine: ProfileEngine, workspace: str) -> None:
    with pytest.raises(InvalidParameter):
        engine.upsert_profiles(workspace, [("u1", {})])


def test_delete_returns_the_pid_and_never_reuses_it(store: Store, engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("u1", {"age": 1}), ("u2", {"age": 2})])
    assert engine.delete_profile(WS, "u2") == 2
    assert engine.delete_profile(WS, "u2") is None
    assert engine.get_profile(WS, "u2") is None
    assert set(engine.select_pids(WS, "age > 0")) == {1}
    engine.close()
    reopened = store.open()
    [again] = reopened.upsert_profiles(WS, [("u2", {"age": 2})])
    assert again.created and again.pid == 3
    assert reopened.pids_for(WS, ["u1", "u2"]) == [1, 3]


def test_id_map_round_trips_in_order(engine: ProfileEngine) -> None:
    ids = [f"user-{n}" for n in range(300)]
    engine.upsert_profiles(WS, [(eid, {}) for eid in ids])
    asked = ["user-7", "missing", "user-0", "user-299", "user-7"]
    pids = engine.pids_for(WS, asked)
    assert pids == [8, None, 1, 300, 8]
    assert engine.external_ids_for(WS, [p or 0 for p in pids]) == [
        "user-7",
        None,
        "user-0",
        "user-299",
        "user-7",
    ]
    assert engine.external_ids_for(WS, [-1, 2**40]) == [None, None]


def test_close_pids_resolve_in_the_order_asked_with_gaps(engine: ProfileEngine) -> None:
    """Pids close together (a message's changes; DuckDB reads them as their range) come back
    in the order asked, repeated as asked, None for a deleted profile and past the last."""
    engine.upsert_profiles(WS, [(f"user-{n}", {}) for n in range(20)])
    assert engine.delete_profile(WS, "user-5") == 6
    asked = [5, 6, 7, 9, 8, 7, 21]
    assert engine.external_ids_for(WS, asked) == [
        "user-4",
        None,
        "user-6",
        "user-8",
        "user-7",
        "user-6",
        None,
    ]
    assert engine.external_ids_for(WS, list(range(1, 21))) == [
        None if n == 5 else f"user-{n}" for n in range(20)
    ]


def test_profiles_by_pid_in_the_order_asked(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [("a", {"age": 1}), ("b", {"age": 2})])
    profiles = engine.get_profiles_by_pid(WS, [2, 99, 1])
    assert [p.external_id if p else None for p in profiles] == ["b", None, "a"]
    assert profiles[0] is not None and profiles[0].attributes == {"age": 2}


def test_select_pids_binds_parameters(engine: ProfileEngine) -> None:
    engine.upsert_profiles(WS, [(f"u{n}", {"age": n, "country": "US"}) for n in range(10)])
    assert set(engine.select_pids(WS, "age >= ? AND country = ?", [7, "US"])) == {8, 9, 10}


RECENT = {
    "duckdb": "last_seen > CAST($now AS TIMESTAMPTZ) - INTERVAL 3 DAY",
    "postgres": "last_seen > CAST($now AS TIMESTAMPTZ) - INTERVAL '3 days'",
    "clickhouse": "last_seen > {now:DateTime64(6, 'UTC')} - INTERVAL 3 DAY",
}
"""A condition on a named parameter in each engine's SQL."""


def test_select_pids_binds_named_parameters(store: Store, engine: ProfileEngine) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    records = [(f"u{n}", {"last_seen": start + timedelta(days=n)}) for n in range(10)]
    engine.upsert_profiles(WS, records)
    recent = RECENT[store.kind]
    assert set(engine.select_pids(WS, recent, {"now": start + timedelta(days=9)})) == {8, 9, 10}
    assert set(engine.select_pids(WS, recent, {"now": start + timedelta(days=1)})) == set(
        range(1, 11)
    )


@pytest.mark.parametrize(
    "where_sql",
    ["age > 1; DROP TABLE x", "pid IN (SELECT pid FROM other)", "age >", "DROP TABLE x"],
)
def test_conditions_that_are_not_one_expression_are_refused(
    engine: ProfileEngine, where_sql: str
) -> None:
    with pytest.raises(Unprocessable) as caught:
        engine.select_pids(WS, where_sql)
    assert caught.value.code == "engine_condition_invalid"


def test_a_condition_that_cannot_run_is_unprocessable(engine: ProfileEngine) -> None:
    with pytest.raises(Unprocessable) as caught:
        engine.select_pids(WS, "no_such_column = 1")
    assert caught.value.code == "engine_query_failed"


def test_a_refused_condition_is_refused_again(engine: ProfileEngine) -> None:
    """The check is cached by text for conditions that pass; a refusal is never remembered."""
    for _ in range(2):
        with pytest.raises(Unprocessable):
            engine.select_pids(WS, "pid IN (SELECT pid FROM other)")


def test_reused_read_cursors_see_later_writes(engine: ProfileEngine) -> None:
    """Reads share idle cursors; each read still sees what was committed before it."""
    for n in range(3):
        engine.upsert_profiles(WS, [(f"u{n}", {"age": 40})])
        with pytest.raises(Unprocessable):
            engine.select_pids(WS, "no_such_column = 1")  # a failed read leaves no bad cursor
        assert len(engine.select_pids(WS, "age = 40")) == n + 1
        assert engine.count(WS) == n + 1


def test_profiles_survive_many_rewrites(engine: ProfileEngine) -> None:
    for round_ in range(5):
        batch = [(f"u{n}", {"age": round_ * 100 + n}) for n in range(200)]
        assert all(r.ok for r in engine.upsert_profiles(WS, batch))
    assert engine.count(WS) == 200
    assert set(engine.select_pids(WS, "age >= 400")) == set(range(1, 201))
    assert engine.pids_for(WS, ["u0", "u199"]) == [1, 200]


TZ_5_30 = timezone(timedelta(hours=5, minutes=30))

VALUES = {
    "country": st.sampled_from(["US", "DE", None]),
    "age": st.one_of(st.none(), st.integers(0, 120)),
    "lifetime_value": st.one_of(st.none(), st.floats(0, 1e6)),
    "churned": st.one_of(st.none(), st.booleans()),
    "signup_date": st.one_of(st.none(), st.dates(date(2000, 1, 1), date(2030, 1, 1))),
    "tags": st.one_of(st.none(), st.lists(st.sampled_from(["vip", "beta"]), max_size=2)),
    "last_seen": st.one_of(
        st.none(),
        st.datetimes(
            datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.sampled_from([UTC, TZ_5_30])
        ),
    ),
    # JSON holds the integers its encoder writes (the engine refuses the others, and rightly).
    "settings": st.one_of(
        st.none(), st.dictionaries(st.sampled_from("ab"), st.integers(-(2**63), 2**64 - 1))
    ),
    "color": st.one_of(st.none(), st.sampled_from(["red", "blue"])),  # undeclared: extra
}


EXAMPLES = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["u1", "u2", "u3"]),
                st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=4),
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=3,
    ),
    data=st.data(),
)
def test_an_upsert_merges_and_returns_each_profile_as_stored(
    engine: ProfileEngine,
    batches: list[list[tuple[str, dict[str, None]]]],
    data: st.DataObject,
) -> None:
    """Against a model of the merge (a value sets, None clears, a name not sent is kept):
    batches where some columns are named by every record and others by a few."""
    ws = f"returned{next(EXAMPLES)}"  # a fresh workspace per example
    engine.ensure_attributes(ws, SCHEMA)
    model: dict[str, dict[str, object]] = {}
    for batch in batches:
        records = [(eid, {name: data.draw(VALUES[name]) for name in names}) for eid, names in batch]
        for eid, attributes in records:
            kept = model.setdefault(eid, {})
            for name, value in attributes.items():
                if value is None:
                    kept.pop(name, None)
                else:
                    kept[name] = value.astimezone(UTC) if isinstance(value, datetime) else value
        for result in engine.upsert_profiles(ws, records):
            assert result.ok and result.profile is not None
            stored = engine.get_profile(ws, result.external_id)
            assert stored is not None
            assert result.profile == stored
            assert stored.attributes == model[result.external_id]


TIME_RANGES = {
    "clickhouse": (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ),
}
"""The earliest and latest time an engine stores, where narrower than Python's (the
ClickHouse engine refuses the rest, docs/engines.md)."""


def test_extreme_values_are_written_and_returned_exactly(
    store: Store, engine: ProfileEngine
) -> None:
    """Every value reaches the engine and comes back exactly, in bulk writes and rewrites."""
    engine.ensure_attributes(
        WS,
        {
            "f": AttributeType.FLOAT,
            "i": AttributeType.INTEGER,
            "t": AttributeType.TIMESTAMP,
            "s": AttributeType.STRING,
            "d": AttributeType.DATE,
            "nl": AttributeType.NUMBER_LIST,
            "j": AttributeType.JSON,
            "churned": AttributeType.BOOLEAN,
        },
    )
    first, last = TIME_RANGES.get(
        store.kind,
        (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    )
    records = [
        ("low", {"f": 5e-324, "i": -(2**63), "t": first, "d": first.date()}),
        ("high", {"f": 1e308, "i": 2**63 - 1, "t": last, "d": last.date()}),
        ("text", {"s": 'a\u2028b"\\\x01😀', "nl": [-0.0, 0.1 + 0.2], "j": {"k": [1, 2.5, None]}}),
    ]
    results = engine.upsert_profiles(WS, records)
    for result, (external_id, attributes) in zip(results, records, strict=True):
        stored = engine.get_profile(WS, external_id)
        assert stored is not None and result.profile == stored
        assert stored.attributes == attributes
    # Written again through an unrelated attribute: the old values are read back from the
    # engine and written a second time.
    touched = [(external_id, {"churned": True}) for external_id, _ in records]
    again = engine.upsert_profiles(WS, touched)
    for result, (external_id, attributes) in zip(again, records, strict=True):
        stored = engine.get_profile(WS, external_id)
        assert stored is not None and result.profile == stored
        assert stored.attributes == {**attributes, "churned": True}


def test_times_outside_the_engines_range_fail_their_record(
    store: Store, engine: ProfileEngine
) -> None:
    if store.kind not in TIME_RANGES:
        pytest.skip(f"{store.kind} stores every time Python has")
    first, last = TIME_RANGES[store.kind]
    records = [
        ("early", {"last_seen": first - timedelta(microseconds=1)}),
        ("late", {"signup_date": last.date() + timedelta(days=1)}),
        ("fine", {"last_seen": first, "signup_date": last.date()}),
    ]
    early, late, fine = engine.upsert_profiles(WS, records)
    for refused in (early, late):
        assert [e.code for e in refused.errors] == ["attribute_type_mismatch"]
        assert engine.get_profile(WS, refused.external_id) is None
    assert fine.ok and fine.profile is not None
    assert fine.profile.attributes == {"last_seen": first, "signup_date": last.date()}


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-02:00", "0001-01-01T00:00:00+01:00"])
def test_a_time_utc_cannot_hold_fails_its_record(engine: ProfileEngine, text: str) -> None:
    """A timestamp whose UTC moment is past year 9999 or before year 1 is a type mismatch of
    its record (converting it to UTC overflows), not an error of the whole write."""
    aware = datetime.fromisoformat(text)
    bad, also_bad, fine = engine.upsert_profiles(
        WS,
        [
            ("bad", {"last_seen": text}),
            ("also-bad", {"last_seen": aware}),
            ("fine", {"last_seen": "2024-01-01T00:00:00+01:00"}),
        ],
    )
    for refused in (bad, also_bad):
        assert [e.code for e in refused.errors] == ["attribute_type_mismatch"]
        assert [e.location for e in refused.errors] == [("attributes", "last_seen")]
    assert fine.ok
    assert engine.pids_for(WS, ["bad", "also-bad"]) == [None, None]

"""Batch planning: per-record checks, folding repeated ids, the canonical form of nested
attributes, and the extra merge."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines.writes import canonical, merge_extra, plan_writes
from audiences.schemas.attributes import AttributeType

SCHEMA = {"age": AttributeType.INTEGER}


def test_records_fold_by_external_id_in_order() -> None:
    plan = plan_writes([("a", {"age": 1, "x": 1}), ("b", {}), ("a", {"age": None, "y": 2})], SCHEMA)
    assert [w.external_id for w in plan.writes] == ["a", "b"]
    assert plan.writes[0].values == {"age": None}
    assert plan.writes[0].extra == {"x": 1, "y": 2}
    assert plan.writes[0].positions == [0, 2]


def test_refused_records_are_reported_at_their_position() -> None:
    plan = plan_writes([("a", {"age": "x"}), ("b", {"age": 2})], SCHEMA)
    results = plan.results()
    assert [r.external_id for r in results] == ["a", "b"]
    assert results[0].errors[0].code == "attribute_type_mismatch"
    assert [w.external_id for w in plan.writes] == ["b"]


def test_non_mapping_attributes_are_refused() -> None:
    plan = plan_writes([("a", ["age", 1])], SCHEMA)  # type: ignore[list-item]
    assert plan.results()[0].errors[0].code == "attributes_invalid"


def test_merge_extra_merges_by_dotted_name() -> None:
    stored = orjson.dumps({"a": {"x": 1, "y": 2}, "b": 2}).decode()  # nested: written long ago
    merged = merge_extra(stored, {"a.y": None, "b": None, "c": [None], "d.e": 3})
    assert merged is not None and orjson.loads(merged) == {"a.x": 1, "c": [None], "d.e": 3}
    assert merge_extra(stored, {}) == stored
    assert merge_extra('{"a": 1}', {"a": None}) is None
    assert merge_extra(None, {"a": None}) is None


def test_text_that_is_not_valid_unicode_fails_its_record_alone() -> None:
    """A lone surrogate (JSON's ``\\ud800`` escape) cannot be stored by any engine."""
    schema = {"name": AttributeType.STRING, "tags": AttributeType.STRING_LIST}
    records = [
        ("ok", {"name": "fine", "tags": ["a"]}),
        ("declared", {"name": "a\ud800"}),
        ("listed", {"tags": ["x", "\udfff"]}),
        ("undeclared", {"note": "\ud800"}),
        ("\ud800", {}),
    ]
    results = plan_writes(records, schema).results()
    codes = [[problem.code for problem in result.errors] for result in results]
    assert codes == [
        [],
        ["attribute_type_mismatch"],
        ["attribute_type_mismatch"],
        ["attribute_type_mismatch"],
        ["external_id_invalid"],
    ]


PATHS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)
LEAVES = st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)


def _prefix_free(names: list[str]) -> bool:
    """No name is a parent of another: such a record has a nested form."""
    return not any(other.startswith(name + ".") for name in names for other in names)


def _nest(flat: dict[str, Any], seed: int) -> dict[str, Any]:
    """The record written with each name nested at a random depth (``{"a": {"b.c": 1}}``)."""
    rng = random.Random(seed)
    record: dict[str, Any] = {}
    for name, value in flat.items():
        parts = name.split(".")
        cut = rng.randint(1, len(parts))
        target = record
        for part in [".".join(parts[:cut]), *parts[cut:]][:-1]:
            target = target.setdefault(part, {})
        target[[".".join(parts[:cut]), *parts[cut:]][-1]] = value
    return record


@settings(suppress_health_check=[HealthCheck.too_slow])  # the prefix-free filter, on a busy CI
@given(
    flat=st.dictionaries(PATHS, LEAVES, max_size=6).filter(lambda d: _prefix_free(list(d))),
    seed=st.integers(0, 2**16),
)
def test_every_write_form_of_a_record_has_one_canonical_form(
    flat: dict[str, Any], seed: int
) -> None:
    """Oracle: the record written with dotted names only; nesting any part changes nothing."""
    nested = _nest(flat, seed)
    assert canonical(nested, {}) == (flat, [])
    # Under a declared name an object is a value (a json attribute), never flattened.
    assert canonical({"a": {"b": 1}}, {"a": AttributeType.JSON}) == ({"a": {"b": 1}}, [])


def test_a_record_giving_one_name_both_ways_is_refused() -> None:
    plan = plan_writes([("a", {"x": {"y": 1}, "x.y": 2}), ("b", {"x": {}})], SCHEMA)
    results = plan.results()
    assert [e.code for e in results[0].errors] == ["attribute_repeated"]
    assert results[1].ok and plan.writes[0].extra == {}, "an empty object sets nothing"

"""Message bodies written from columns read back as the objects they stand for: every change
once, in order, split into messages of at most the batch size, whatever the external ids
hold (quotes, backslashes, control characters, other scripts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from audiences.services.message_bodies import Batch, Group, body

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

ids = st.lists(st.text(min_size=1, max_size=12), max_size=8)
causes = st.sampled_from([{"kind": "write"}, {"kind": "run", "run_id": 'run_"1\\'}])
groups = st.builds(
    lambda found, kind, revision, cause, picked: (found, kind, revision, cause, picked),
    ids,
    st.sampled_from(["entered", "exited"]),
    st.integers(1, 10**6),
    causes,
    st.booleans(),
)


def _objects(
    found: list[str], kind: str, revision: int, cause: dict[str, Any], picked: bool
) -> list[dict[str, Any]]:
    return [
        {"id": external, "change": kind, "revision": revision, "cause": cause}
        | ({"attributes": {"plan": external[:3], "n": 1.5}} if picked else {})
        for external in found
    ]


@given(
    audiences=st.lists(st.lists(groups, max_size=3), min_size=1, max_size=3),
    size=st.integers(1, 7),
)
def test_bodies_hold_every_change_once_in_order(
    audiences: list[list[tuple[list[str], str, int, dict[str, Any], bool]]], size: int
) -> None:
    batch = Batch(size)
    expected: list[tuple[str, dict[str, Any]]] = []
    for number, audience in enumerate(audiences):
        made = []
        for found, kind, revision, cause, picked in audience:
            attributes = (
                [json.dumps({"plan": e[:3], "n": 1.5}, ensure_ascii=False) for e in found]
                if picked
                else None
            )
            made.append(Group(found, kind, revision, cause, attributes))
            expected += [
                (f"a{number}", one) for one in _objects(found, kind, revision, cause, picked)
            ]
        batch.add(f"a{number}", f'key "{number}"', number == 0, made, NOW + timedelta(number))
    batch.close()
    got: list[tuple[str, dict[str, Any]]] = []
    for data, count, first in batch.done:
        parsed = json.loads(body("audience.membership_changed", data, NOW))
        assert parsed["type"] == "audience.membership_changed"
        assert parsed["timestamp"] == "2026-12-06T12:00:00Z"
        sections = parsed["data"]["audiences"]
        changes = [(s["id"], c) for s in sections for c in s["changes"]]
        assert len(changes) == count <= size
        assert first == NOW + timedelta(int(sections[0]["id"][1:]))
        for section in sections:
            number = int(section["id"][1:])
            assert section["key"] == f'key "{number}"'
            assert section["snapshot"] is (number == 0)
        got += changes
    assert got == expected
    # each audience has a section (an empty first delivery says so)
    assert {s["id"] for d, _, _ in batch.done for s in json.loads(d)["audiences"]} == {
        f"a{number}" for number in range(len(audiences))
    }


def test_plain_ids_are_written_as_the_encoder_would() -> None:
    batch = Batch(1000)
    batch.add("a", "k", False, [Group(["u1", "ü2"], "exited", 3, {"kind": "write"})], NOW)
    batch.close()
    data = batch.done[0][0]
    assert data == (
        '{"audiences":[{"id":"a","key":"k","snapshot":false,"changes":['
        '{"id":"u1","change":"exited","revision":3,"cause":{"kind":"write"}},'
        '{"id":"ü2","change":"exited","revision":3,"cause":{"kind":"write"}}]}]}'
    )

"""Message bodies written from columns read back as the objects they stand for (a reference
that packs one change object at a time): every change once, in order, split into messages of
at most the batch size, sections only for the audiences with changes in a message (and an
empty full list), whatever the external ids hold (quotes, backslashes, control characters,
other scripts)."""

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
GroupSpec = tuple[list[str], str, int, dict[str, Any], int, bool]
"""A group drawn: ids, kind, revision, cause, its time (days after NOW), attributes or not."""
groups = st.tuples(
    ids,
    st.sampled_from(["entered", "exited"]),
    st.integers(1, 10**6),
    causes,
    st.integers(0, 5),
    st.booleans(),
)
Section = tuple[str, bool, list[dict[str, Any]]]
"""A message's section as read back: audience id, snapshot, changes."""
Message = tuple[list[Section], int, datetime | None]


def _objects(
    found: list[str], kind: str, revision: int, cause: dict[str, Any], picked: bool
) -> list[dict[str, Any]]:
    return [
        {"id": external, "change": kind, "revision": revision, "cause": cause}
        | ({"attributes": {"plan": external[:3], "n": 1.5}} if picked else {})
        for external in found
    ]


def _reference(audiences: list[tuple[bool, list[GroupSpec]]], size: int) -> list[Message]:
    """The messages the spec asks for, one change object at a time: at most ``size``
    changes each, a section only for an audience with changes in the message (or the empty
    full list of an audience with no members, where it falls), ``first_change_at`` the
    earliest time of the changes in it."""
    done: list[Message] = []
    sections: list[Section] = []
    times: list[datetime] = []
    for number, (snapshot, specs) in enumerate(audiences):
        changes = [
            (one, NOW + timedelta(days))
            for found, kind, revision, cause, days, picked in specs
            for one in _objects(found, kind, revision, cause, picked)
        ]
        if not changes and snapshot:
            sections.append((f"a{number}", True, []))
        opened = False
        for one, at in changes:
            if len(times) == size:
                done.append((sections, len(times), min(times)))
                sections, times, opened = [], [], False
            if not opened:
                sections.append((f"a{number}", snapshot, []))
                opened = True
            sections[-1][2].append(one)
            times.append(at)
    if sections:
        done.append((sections, len(times), min(times, default=None)))
    return done


@given(
    audiences=st.lists(
        st.tuples(st.booleans(), st.lists(groups, max_size=3)), min_size=1, max_size=4
    ),
    size=st.integers(1, 7),
)
def test_bodies_are_the_reference_messages(
    audiences: list[tuple[bool, list[GroupSpec]]], size: int
) -> None:
    """Bodies written from columns read back as the reference's messages: every change once,
    in order, no empty section at a message's end when the one before filled it exactly,
    and each message's first change time that of a change in it."""
    batch = Batch(size)
    for number, (snapshot, specs) in enumerate(audiences):
        made = [
            Group(
                found,
                kind,
                revision,
                cause,
                NOW + timedelta(days),
                [json.dumps({"plan": e[:3], "n": 1.5}, ensure_ascii=False) for e in found]
                if picked
                else None,
            )
            for found, kind, revision, cause, days, picked in specs
        ]
        batch.add(f"a{number}", f'key "{number}"', snapshot, made)
    batch.close()
    got: list[Message] = []
    for data, count, first in batch.done:
        parsed = json.loads(body("audience.membership_changed", data, NOW))
        assert parsed["type"] == "audience.membership_changed"
        assert parsed["timestamp"] == "2026-12-06T12:00:00Z"
        sections = parsed["data"]["audiences"]
        assert all(s["key"] == f'key "{s["id"][1:]}"' for s in sections)
        got.append(([(s["id"], s["snapshot"], s["changes"]) for s in sections], count, first))
    assert got == _reference(audiences, size)


def test_a_message_filled_exactly_is_closed_before_the_next_audience() -> None:
    """The next audience's changes start the next message: no empty section of it in the
    full one, whose first change time stays that of its own (earlier changes of the next
    audience do not lower it)."""
    batch = Batch(2)
    later, earlier = NOW + timedelta(hours=1), NOW
    batch.add("a", "ka", False, [Group(["u1", "u2"], "entered", 4, {"kind": "write"}, later)])
    batch.add("b", "kb", False, [Group(["u3"], "exited", 9, {"kind": "write"}, earlier)])
    batch.close()
    assert [
        ([s["id"] for s in json.loads(data)["audiences"]], count, first)
        for data, count, first in batch.done
    ] == [(["a"], 2, later), (["b"], 1, earlier)]


def test_plain_ids_are_written_as_the_encoder_would() -> None:
    batch = Batch(1000)
    batch.add("a", "k", False, [Group(["u1", "ü2"], "exited", 3, {"kind": "write"}, NOW)])
    batch.close()
    data = batch.done[0][0]
    assert data == (
        '{"audiences":[{"id":"a","key":"k","snapshot":false,"changes":['
        '{"id":"u1","change":"exited","revision":3,"cause":{"kind":"write"}},'
        '{"id":"ü2","change":"exited","revision":3,"cause":{"kind":"write"}}]}]}'
    )

"""The demo's events: none after the time they are generated for (a write refuses events from the
future), the same for the same seed, and every kind the behavioural demo audiences read."""

from __future__ import annotations

from datetime import UTC, datetime

from audiences.cli.demo_events import events


def test_no_demo_event_lies_after_its_anchor_and_every_kind_is_there() -> None:
    anchor = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    made = list(events(5_000, seed=3, anchor=anchor))
    assert max(event.timestamp for event in made) <= anchor
    assert {e.name for e in made} >= {"signed_up", "pricing_viewed", "order", "page_view"}
    assert made == list(events(5_000, seed=3, anchor=anchor))

"""next_change against brute force: the answer is constant before the moment and differs at it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.rules import EVENTS_KEY, next_change, parse_rule, to_predicate, validate_rule
from audiences.schemas.attributes import AttributeType as T
from tests.rules import event_generators as gen

HORIZON = timedelta(days=140)


def probes(profile: dict[str, Any], start: datetime) -> list[datetime]:
    """Many instants after ``start``: every six hours to the horizon, and each event time moved
    by every window length the generated rules use, exactly and a microsecond either side."""
    found = {start + timedelta(hours=6 * n) for n in range(1, HORIZON.days * 4)}
    for event in profile[EVENTS_KEY]:
        for days in gen.DAYS:
            for hours in (0, 5):
                bound = event.timestamp + timedelta(days=days, hours=hours)
                found |= {bound - gen.TINY, bound, bound + gen.TINY}
    return sorted(moment for moment in found if start < moment <= start + HORIZON)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=gen.behavioural_rules(),
    profiles=gen.batches(4),
    shift=st.sampled_from(gen.SHIFTS),
)
def test_next_change_agrees_with_brute_force(
    text: str, profiles: list[dict[str, Any]], shift: timedelta
) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    start = gen.NOW + shift
    clock = [start]
    predicate = to_predicate(rule, clock=lambda: clock[0])
    for profile in profiles:
        moment = next_change(rule, profile, start)
        clock[0] = start
        answer = predicate(profile)
        for probe in probes(profile, start):
            if moment is not None and probe >= moment:
                break
            clock[0] = probe
            assert predicate(profile) == answer, (rule.text, probe, moment, profile)
        if moment is not None:
            clock[0] = moment
            assert predicate(profile) != answer, (rule.text, moment)
            clock[0] = moment - gen.TINY
            assert predicate(profile) == answer, (rule.text, moment)


def test_attributes_compared_with_the_clock_count_too() -> None:
    rule = validate_rule("last_seen > now() - INTERVAL 1 HOUR", {"last_seen": T.TIMESTAMP})
    seen = gen.NOW
    assert next_change(rule, {"last_seen": seen}, seen) == seen + timedelta(hours=1)
    assert next_change(rule, {}, seen) is None
    assert next_change(parse_rule("age > 1"), {}, seen) is None


@pytest.mark.parametrize(
    "text",
    ["born < current_date", "count(*) FILTER (WHERE timestamp > now() - INTERVAL 1 MONTH) > 0"],
)
def test_calendar_clocks_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        next_change(parse_rule(text), {}, gen.NOW)

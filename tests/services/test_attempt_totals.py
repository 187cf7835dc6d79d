"""Attempt counters: what a transaction counts is added when it commits and only then, summed
over the shard rows, whatever the destinations and outcomes."""

from __future__ import annotations

import uuid
from collections import Counter

from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from audiences.services import attempt_totals

COUNTS = st.lists(
    st.tuples(
        st.sampled_from(["dst_a", "dst_b", "dst_c", "dst_d"]),
        st.sampled_from(["delivered", "failed"]),
        st.integers(min_value=0, max_value=50),
    ),
    max_size=5,
)
"""What one transaction counts: (destination, outcome, attempts)."""


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(COUNTS, st.booleans()), max_size=6))
def test_committed_counts_add_up_and_rolled_back_ones_vanish(
    app: FastAPI, transactions: list[tuple[list[tuple[str, str, int]], bool]]
) -> None:
    """The oracle: the sum of what the committed transactions counted, per outcome."""
    kind = f"k{uuid.uuid4().hex[:12]}"  # a kind of its own: the table is the app's
    expected: Counter[tuple[str, str]] = Counter()
    for counts, commits in transactions:
        with app.state.session_factory() as session:
            for of, outcome, count in counts:
                _add(session, attempt_totals.DELIVERY, of, kind, {outcome: count})
            if commits:
                session.commit()
                for _, outcome, count in counts:
                    expected[(kind, outcome)] += count
            else:
                session.rollback()
    with app.state.session_factory() as session:
        found = attempt_totals.totals(session, attempt_totals.DELIVERY)
    assert {key: n for key, n in found.items() if key[0] == kind} == {
        key: n for key, n in expected.items() if n
    }


def test_a_session_that_rolls_back_then_commits_counts_only_the_second(app: FastAPI) -> None:
    kind = f"k{uuid.uuid4().hex[:12]}"
    with app.state.session_factory() as session:
        _add(session, attempt_totals.SYNC, "a", kind, {"failed": 2})
        session.rollback()
        _add(session, attempt_totals.SYNC, "a", kind, {"synced": 1})
        session.commit()
        session.commit()  # nothing more to count
    with app.state.session_factory() as session:
        found = attempt_totals.totals(session, attempt_totals.SYNC)
    assert {key: n for key, n in found.items() if key[0] == kind} == {(kind, "synced"): 1}


def _add(session: Session, subject: str, of: str, kind: str, counts: dict[str, int]) -> None:
    attempt_totals.add(session, subject=subject, of=of, kind=kind, counts=counts)

"""The sending line: messages go out one at a time in the order handed; the first that fails
halts the line, nothing handed after it is sent until messages read afresh are handed."""

from __future__ import annotations

import threading
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from audiences.jobs.delivery_line import Line
from audiences.kit.clock import utcnow
from audiences.services.delivery_sends import Send, Sent
from audiences.services.senders import Outcome


def _drain(line: Line) -> list[Sent]:
    done: list[Sent] = []
    while not line.idle():
        done += line.take(leaving=0, timeout=1.0)
    return done


@settings(max_examples=60, deadline=None)
@given(oks=st.lists(st.booleans(), min_size=1, max_size=25), step=st.integers(1, 6))
def test_in_order_halted_by_the_first_failure_resumed_from_the_head(
    oks: list[bool], step: int
) -> None:
    sends = [Send(f"msg_{n}", n, "{}", "webhook", None, [], "d") for n in range(len(oks))]
    attempted: list[int] = []
    answers = list(oks)

    def attempt(send: Send) -> Outcome:
        attempted.append(send.seq)
        ok = answers[send.seq]
        return Outcome(ok, 204 if ok else 503, 0, error=None if ok else "503")

    line = Line(attempt)
    try:
        for start in range(0, len(sends), step):  # handed in steps, as a delivery run does
            line.put(sends[start : start + step], fresh=start == 0)
        done = _drain(line)
        failed = oks.index(False) if False in oks else len(oks)
        assert attempted == list(range(min(failed + 1, len(oks))))
        assert [one.send.seq for one in done] == attempted
        assert [one.outcome.ok for one in done] == [oks[n] for n in attempted]
        assert all(one.started_at <= one.finished_at for one in done)
        if failed < len(oks):
            answers[failed] = True  # the retry succeeds; the run hands the head again
            line.put(sends[failed + 1 :], fresh=False)  # still halted: dropped
            assert _drain(line) == [] and attempted[-1] == failed
            answers[failed + 1 :] = [True] * (len(oks) - failed - 1)
            line.put(sends[failed:], fresh=True)
            again = _drain(line)
            assert [one.send.seq for one in again] == list(range(failed, len(oks)))
    finally:
        line.close()


def test_halting_drops_what_is_queued_and_lets_the_one_in_flight_finish() -> None:
    started, release = threading.Event(), threading.Event()
    attempted: list[int] = []

    def attempt(send: Send) -> Outcome:
        attempted.append(send.seq)
        started.set()
        release.wait(5)
        return Outcome(True, 204, 0)

    line = Line(attempt)
    try:
        sends = [Send(f"msg_{n}", n, "{}", "webhook", None, [], "d") for n in range(5)]
        line.put(sends, fresh=True)
        assert started.wait(5)
        line.halt()
        release.set()
        done = _drain(line)
        assert attempted == [0] and [one.send.seq for one in done] == [0]
    finally:
        line.close()


def test_no_attempt_starts_past_the_lease() -> None:
    attempted: list[int] = []

    def attempt(send: Send) -> Outcome:
        attempted.append(send.seq)
        return Outcome(True, 204, 0)

    line = Line(attempt)
    try:
        sends = [Send(f"msg_{n}", n, "{}", "webhook", None, [], "d") for n in range(3)]
        line.hold_until(utcnow() - timedelta(seconds=1))
        line.put(sends, fresh=True)
        assert _drain(line) == [] and attempted == []
        line.hold_until(utcnow() + timedelta(minutes=1))  # renewed: read afresh, sent
        line.put(sends, fresh=True)
        assert [one.send.seq for one in _drain(line)] == [0, 1, 2] == attempted
    finally:
        line.close()

"""``destinations.deliver``: put a destination's waiting changes into messages and send them
in order, one attempt each, until none is due; retries come back as a later job.

The run sends through a :class:`~audiences.jobs.delivery_line.Line` (one message in flight,
in order) and meanwhile, in one transaction per step, logs the attempts that finished and
reads or makes the next messages, so the database work overlaps the receiver's answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.jobs.context import JobContext
from audiences.jobs.delivery_line import Line
from audiences.kit.clock import utcnow
from audiences.queue import ClaimedJob
from audiences.services import (
    deliveries,
    delivery_leases,
    delivery_sends,
    egress,
    file_deliveries,
    messages,
    outbox,
    senders,
)
from audiences.store.tables import DestinationRow

BEAT_SECONDS = 1.0
"""How often a delivery run checkpoints its job (the worker's own thread extends the lease)."""
AHEAD = 128
"""Most messages handed to the sending line ahead of its answers (one in flight, the rest
queued). The run tops the line up once at most ``AHEAD // 2`` wait, so each step logs and
makes several messages in one transaction (and resolves their ids in one engine call): a
step's statements, commit and engine query cost about 5 ms of CPU whatever its size, so
steps of 64 messages spend 0.3 ms less a message than steps of 16 (``bench/deliveries``)."""


def deliver(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Deliver what the destination (payload ``destination_id``) has waiting. A rerun after a
    crash sends the unconfirmed message again (same ``webhook-id``): at least once."""
    destination_id = str(job.payload["destination_id"])
    settings = context.settings
    hold = timedelta(seconds=max(settings.job_lease_seconds, 2 * settings.webhook_timeout_seconds))
    with context.session() as session:
        row = session.get(DestinationRow, destination_id)
        if row is None or row.workspace_id != job.workspace_id:
            return {"skipped": "the destination no longer exists"}
        if not row.enabled:
            return {"skipped": "the destination is disabled"}
        lease = _Lease(destination_id, job.id, utcnow() + hold, hold)
        claimed = delivery_leases.claim(
            session, destination_id=row.id, job_id=job.id, until=lease.until
        )
        if not claimed:
            return {"skipped": "another delivery job holds the destination"}
    try:
        return _run(context, job, lease)
    finally:
        with context.session() as session:
            delivery_leases.release(
                session, destination_id=destination_id, job_id=job.id, held=lease.until
            )


@dataclass
class _Lease:
    """The run's lease on its destination: ``until`` is the end it last set, which also
    tells the run's lease from that of a rerun of the same job (see ``delivery_leases.renew``)."""

    destination_id: str
    job_id: str
    until: datetime
    hold: timedelta

    def renew(self, session: Session, now: datetime) -> bool:
        """Extend the lease by ``hold`` from ``now``; False when it is no longer the run's."""
        until = now + self.hold
        if not delivery_leases.renew(
            session,
            destination_id=self.destination_id,
            job_id=self.job_id,
            held=self.until,
            until=until,
        ):
            return False
        self.until = until
        return True

    def sending_until(self, settings: Settings) -> datetime:
        """The last moment an attempt may start: it ends before the lease does."""
        return self.until - timedelta(seconds=settings.webhook_timeout_seconds)


def _run(context: JobContext, job: ClaimedJob, lease: _Lease) -> dict[str, Any]:
    settings = context.settings
    # One client per run: its connections are kept alive between messages to one receiver.
    with senders.client(settings) as http:
        return _deliver_all(context, job, lease, http)


def _deliver_all(
    context: JobContext,
    job: ClaimedJob,
    lease: _Lease,
    http: egress.PinnedClient,
) -> dict[str, Any]:
    settings = context.settings
    destination_id, hold = lease.destination_id, lease.hold
    lost = False  # a renewal found the lease taken over: stop sending
    gone = False  # the destination was deleted
    built = sent = failed = 0
    later: datetime | None = None
    mirror: file_deliveries.Mirror | None = None
    beaten = renewed = utcnow()

    def attempt(one: delivery_sends.Send) -> senders.Outcome:
        return delivery_sends.send(one, settings=settings, client=http)

    line = Line(attempt)
    line.hold_until(lease.sending_until(settings))
    after: int | None = None  # the seq of the last message handed to the line
    stalled = False  # nothing more to hand while the line works: wait for it
    more = False  # the last build stopped at its limit: changes are waiting
    drained = False  # the last build found nothing to make
    limit = 1  # the messages the last build could make
    try:
        while True:
            now = utcnow()
            if (now - beaten).total_seconds() >= BEAT_SECONDS:
                context.heartbeat()  # sees a cancel or a lost lease; a write, so not per message
                beaten = now
            if later is not None and line.idle():
                # A batch or retry due within a poll of the workers is waited for here (a later
                # job would only be claimed at the next poll); a longer wait goes back to the
                # queue.
                pause = (later - now).total_seconds()
                if pause > settings.job_poll_seconds:
                    break
                time.sleep(max(0.0, pause))
                later, now = None, utcnow()
            # Wait for the line when it has enough to do, a beat at most (the leases are
            # renewed between beats). With nothing more to hand, until half of what it holds
            # is sent: the tail of a run is logged in a few steps, not a step a message (each
            # step is a transaction and several statements).
            waiting = line.waiting()
            leaving = waiting // 2 if stalled else min(waiting, AHEAD // 2)
            done = line.take(leaving=leaving, timeout=BEAT_SECONDS)
            stalled = False
            with context.session() as session:
                # The attempts finished since the last step are logged in this transaction:
                # a crash before it commits sends them again (at least once).
                # Key-share locked (PostgreSQL): a delete waits for this step, whose logging
                # of attempts refers to the destination's messages.
                found = session.get(
                    DestinationRow, destination_id, with_for_update={"key_share": True}
                )
                if found is None:  # deleted while the run sent: its messages went with it
                    line.halt()
                    gone = True
                    break
                row = found
                if done:
                    deliveries.record_sent(session, done, settings=settings)
                    failures = sum(not one.outcome.ok for one in done)
                    sent, failed = sent + len(done), failed + failures
                    context.count("attempts", len(done))
                    if failures:
                        context.count("failures", failures)
                if now - renewed >= hold / 2:
                    if not lease.renew(session, now):
                        line.halt()
                        lost = True
                        break
                    line.hold_until(lease.sending_until(settings))
                    renewed = now
                if not row.enabled:
                    line.halt()  # what was handed and not sent yet stays pending
                    if line.idle():
                        break
                    stalled = True
                    continue
                if row.kind == "file" and row.mode == "full":  # written below, outside this
                    mirror = file_deliveries.plan(
                        session, runtime=context.runtime, row=row, now=now
                    )
                    break
                first = line.first()
                if first is not None and delivery_sends.due_before(
                    session, row, seq=first, now=now
                ):
                    # A message was asked again behind the line: it goes first, so the line
                    # empties and the next messages are read from the head.
                    line.halt()
                    stalled = True
                    continue
                # With the line idle (every outcome logged) the next message is read from the
                # destination's head: a failed message waiting for its retry, or one a client
                # asked to send again, goes first. Otherwise after those already handed.
                fresh = line.idle()
                if fresh:
                    after, drained = None, False
                room = AHEAD - line.waiting()
                sends: list[delivery_sends.Send] = []
                due: datetime | None = None
                if room > 0:
                    sends, due = delivery_sends.next_sends(
                        session, row, after=after, limit=room, now=now
                    )
                    if not sends and due is None and not drained:
                        # Every message made is handed: make the next ones now, while the
                        # line sends the last.
                        # A build that filled its room left changes waiting: no batch wait.
                        wait = None if more else messages.wait_until(session, row, settings, now)
                        if wait is None:
                            # The first message of an idle line alone: it goes out while
                            # the next are made. Then each step four times the last, up to the
                            # line's room: a large first step would leave the line idle.
                            limit = 1 if fresh else min(room, 4 * limit)
                            made = messages.build(
                                session,
                                runtime=context.runtime,
                                row=row,
                                settings=settings,
                                limit=limit,
                            )
                            built += len(made)
                            more = len(made) >= limit
                            # Nothing to make: look again once the line is idle.
                            drained = not made
                            sends = delivery_sends.sends_of(row, made, now)
                        else:
                            later = wait
                if due is not None:
                    later = due if later is None else min(later, due)
                if not sends:
                    if not line.idle():
                        stalled = True
                        continue
                    if row.kind == "file":
                        deliveries.schedule_next(session, row, now)
                    if (
                        later is not None
                        and (later - now).total_seconds() <= settings.job_poll_seconds
                    ):
                        continue
                    break
            # Handed only once the step has committed: a message just built is never sent
            # before the database holds it (a crash resends it under the same webhook-id).
            line.put(sends, fresh=fresh)
            after = sends[-1].seq
    finally:
        left = line.close()
        if left and not gone:  # attempts made while the run was stopping (a cancel, a lost lease)
            with context.session() as session:
                deliveries.record_sent(session, left, settings=settings)
    if gone:
        return {
            "messages_built": built,
            "attempts": sent,
            "failures": failed,
            "stopped": "the destination was deleted",
        }
    if lost:
        return {
            "messages_built": built,
            "attempts": sent,
            "failures": failed,
            "stopped": "the destination's lease went to another run",
        }
    if mirror is not None:
        between = _keeping(context, lease)
        written = file_deliveries.write_full(context.runtime, mirror, settings, between=between)
        with context.session() as session:  # logged; schedules the next write or the retry
            deliveries.finish_full(session, mirror=mirror, written=written, settings=settings)
        built, sent, failed = len(written.files), 1, 0 if written.outcome.ok else 1
        context.count("attempts")
        context.count("failures", failed)
    if later is not None:
        with context.session() as session:
            outbox.wake(
                session,
                workspace_id=job.workspace_id,
                destination_id=destination_id,
                run_after=later,
            )
    return {"messages_built": built, "attempts": sent, "failures": failed}


def _keeping(context: JobContext, lease: _Lease) -> Callable[[], None]:
    """Between a long ``full`` run's files: checkpoint the job (a cancel is seen) and renew
    the destination's lease (two writes a file, each file being a whole audience); a lease
    taken over stops the run."""

    def keep() -> None:
        context.heartbeat()
        with context.session() as session:
            if not lease.renew(session, utcnow()):
                raise LeaseTaken("a rerun of the job took the destination over")

    return keep


class LeaseTaken(Exception):
    """The destination's lease went to a rerun of the job while this run wrote files."""

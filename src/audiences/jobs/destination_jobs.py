"""``destinations.deliver``: put a destination's waiting changes into messages and send them
in order, one attempt each, until none is due; retries come back as a later job."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from audiences.jobs.context import JobContext
from audiences.kit.clock import utcnow
from audiences.queue import ClaimedJob
from audiences.services import deliveries, file_deliveries, messages, outbox, senders
from audiences.store.tables import DestinationRow

BEAT_SECONDS = 1.0
"""How often a delivery run checkpoints its job (the worker's own thread extends the lease)."""


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
        if not deliveries.claim(
            session, destination_id=row.id, job_id=job.id, until=utcnow() + hold
        ):
            return {"skipped": "another delivery job holds the destination"}
    try:
        return _run(context, job, destination_id, hold)
    finally:
        with context.session() as session:
            deliveries.release(session, destination_id=destination_id, job_id=job.id)


def _run(
    context: JobContext, job: ClaimedJob, destination_id: str, hold: timedelta
) -> dict[str, Any]:
    settings = context.settings
    # One client per run: its connections are kept alive between messages to one receiver.
    with senders.client(settings) as http:
        return _deliver_all(context, job, destination_id, hold, http)


def _deliver_all(
    context: JobContext,
    job: ClaimedJob,
    destination_id: str,
    hold: timedelta,
    http: httpx.Client,
) -> dict[str, Any]:
    settings = context.settings
    built = sent = failed = 0
    later: datetime | None = None
    mirror: file_deliveries.Mirror | None = None
    beaten = renewed = utcnow()
    while True:
        now = utcnow()
        if (now - beaten).total_seconds() >= BEAT_SECONDS:
            context.heartbeat()  # sees a cancel or a lost lease; a write, so not per message
            beaten = now
        if later is not None:
            # A batch due within a poll of the workers is waited for here (a later job would
            # only be claimed at the next poll); a longer wait goes back to the queue.
            pause = (later - now).total_seconds()
            if pause > settings.job_poll_seconds:
                break
            time.sleep(max(0.0, pause))
            later, now = None, utcnow()
        with context.session() as session:
            row = session.get_one(DestinationRow, destination_id)
            if not row.enabled:
                break
            if now - renewed >= hold / 2:
                deliveries.claim(session, destination_id=row.id, job_id=job.id, until=now + hold)
                renewed = now
            if row.kind == "file" and row.mode == "full":  # written below, outside this
                mirror = file_deliveries.plan(session, runtime=context.runtime, row=row, now=now)
                break
            # Messages already made go first; new ones are made once they are all out.
            message = deliveries.head(session, row)
            if message is None:
                wait = messages.wait_until(session, row, settings, now)
                if wait is None:
                    built += messages.build(
                        session, runtime=context.runtime, row=row, settings=settings
                    )
                    message = deliveries.head(session, row)
                else:
                    later = wait
            if message is None:
                if row.kind == "file":
                    deliveries.schedule_next(session, row, now)
                if later is not None and (later - now).total_seconds() <= settings.job_poll_seconds:
                    continue
                break
            if message.next_attempt_at > utcnow():
                later = (
                    message.next_attempt_at
                    if later is None
                    else min(later, message.next_attempt_at)
                )
                break
            send = deliveries.prepare(row, message, now)
        outcome = deliveries.send(send, row=row, settings=settings, client=http)
        with context.session() as session:
            deliveries.record(
                session, message_id=send.message_id, outcome=outcome, settings=settings
            )
        sent += 1
        failed += 0 if outcome.ok else 1
        context.count("attempts")
        if not outcome.ok:
            context.count("failures")
            continue  # the head is now scheduled later (or the destination is off): looked at above
    if mirror is not None:
        between = _keeping(context, job, destination_id, hold)
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


def _keeping(
    context: JobContext, job: ClaimedJob, destination_id: str, hold: timedelta
) -> Callable[[], None]:
    """Between a long ``full`` run's files: checkpoint the job (a cancel is seen) and renew
    the destination's lease (two writes a file, each file being a whole audience)."""

    def keep() -> None:
        context.heartbeat()
        with context.session() as session:
            until = utcnow() + hold
            deliveries.claim(session, destination_id=destination_id, job_id=job.id, until=until)

    return keep

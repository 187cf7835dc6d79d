"""The scheduler: every few seconds, queue one ``evaluation.refresh_due`` job per workspace with
scheduled audiences that are due, one ``membership.sync`` job per external audience whose
scheduled sync is due and, every sweep interval, one ``evaluation.sweep`` job per
workspace with streaming behavioural audiences, and keep house: sweep the uploads of imports
cancelled before they ran and, once an hour, queue a ``membership.expire`` job per workspace
whose static lists have a ttl, an ``events.expire`` job per workspace with an event
retention, delete the delivery log past its retention, and purge expired idempotency keys.

Any number of schedulers may run (one per server or worker process): the job's dedupe key names
the time slot, so a slot yields one job per workspace whoever notices it first, and a workspace
with such a job still queued or running gets no second one — never two runs of one audience at
once. The job refreshes the due audiences in dependency order (see ``jobs/handlers.py``).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.config import Settings
from audiences.kit.clock import utcnow
from audiences.kit.logs import get_logger
from audiences.schemas.jobs import JobKind
from audiences.services import (
    deliveries,
    evaluation,
    events,
    freshness,
    imports,
    maintenance,
    member_days,
    outbox,
    static_members,
    syncs,
)
from audiences.store.tables import JobRow

REFRESH_DUE = "evaluation.refresh_due"
PURGE_EVERY = timedelta(hours=1)
"""How often each scheduler purges expired idempotency keys (they expire after hours)."""
PURGE_BATCH = 1000
"""Delivery log messages deleted per transaction by the hourly housekeeping."""
log = get_logger("audiences.jobs")


def tick(session: Session, *, now: datetime, slot_seconds: int) -> list[JobRow]:
    """Queue the refresh jobs due at ``now``; the jobs queued (or found queued already)."""
    workspaces = sorted({audience.workspace_id for audience in freshness.due(session, now=now)})
    slot = int(now.timestamp()) // max(slot_seconds, 1)
    queued = []
    for workspace_id in workspaces:
        active = queue.active_for_subject(
            session, workspace_id=workspace_id, subject_id=workspace_id, handler=REFRESH_DUE
        )
        if active:
            queued.append(active[0])
            continue
        queued.append(
            queue.enqueue(
                session,
                workspace_id=workspace_id,
                kind=JobKind.EVALUATION,
                handler=REFRESH_DUE,
                subject_id=workspace_id,
                dedupe_key=f"{REFRESH_DUE}:{slot}",
                created_by="scheduler",
            )
        )
    return queued


def queue_syncs(session: Session, *, now: datetime) -> list[JobRow]:
    """One ``membership.sync`` job per external audience whose scheduled sync is due, none
    while one is queued or running (``services/syncs.queue_sync``)."""
    return [
        syncs.queue_sync(session, audience, trigger="scheduled", created_by="scheduler")
        for audience in syncs.due(session, now=now)
    ]


def queue_sweeps(session: Session, *, now: datetime, sweep_seconds: int) -> list[JobRow]:
    """One ``evaluation.sweep`` job per workspace with streaming behavioural audiences per
    sweep interval (the slot in its dedupe key), none while one is still queued or running."""
    slot = int(now.timestamp()) // max(sweep_seconds, 1)
    queued = []
    for workspace_id in evaluation.workspaces_to_sweep(session):
        active = queue.active_for_subject(
            session,
            workspace_id=workspace_id,
            subject_id=workspace_id,
            handler=evaluation.SWEEP_HANDLER,
        )
        queued.append(
            active[0]
            if active
            else queue.enqueue(
                session,
                workspace_id=workspace_id,
                kind=JobKind.EVALUATION,
                handler=evaluation.SWEEP_HANDLER,
                subject_id=workspace_id,
                dedupe_key=f"{evaluation.SWEEP_HANDLER}:{slot}",
                created_by="scheduler",
            )
        )
    return queued


def queue_expiries(session: Session, *, now: datetime) -> list[JobRow]:
    """One ``membership.expire`` job per workspace with a static audience that has a ttl, once
    per hour whichever scheduler asks first (the dedupe key names the hour)."""
    hour = now.strftime("%Y%m%d%H")
    return [
        queue.enqueue(
            session,
            workspace_id=workspace_id,
            kind=JobKind.EVALUATION,
            handler=static_members.EXPIRE_HANDLER,
            subject_id=workspace_id,
            dedupe_key=f"{static_members.EXPIRE_HANDLER}:{hour}",
            created_by="scheduler",
        )
        for workspace_id in member_days.workspaces_with_ttl(session)
    ]


def queue_event_expiries(session: Session, *, now: datetime) -> list[JobRow]:
    """One ``events.expire`` job per workspace that keeps events for a limited time, once per
    hour whichever scheduler asks first."""
    hour = now.strftime("%Y%m%d%H")
    return [
        queue.enqueue(
            session,
            workspace_id=workspace_id,
            kind=JobKind.MAINTENANCE,
            handler=events.EXPIRE_HANDLER,
            subject_id=workspace_id,
            dedupe_key=f"{events.EXPIRE_HANDLER}:{hour}",
            created_by="scheduler",
        )
        for workspace_id in events.workspaces_with_retention(session)
    ]


def queue_deliveries(session: Session, *, now: datetime) -> int:
    """Wake the destinations that have work and no delivery job: file destinations on their
    schedule, and webhooks whose wake-up was missed (a change that committed while their job
    was finishing); how many."""
    found = deliveries.needing_jobs(session, now)
    for row in found:
        outbox.wake(session, workspace_id=row.workspace_id, destination_id=row.id)
    return len(found)


class Housekeeping:
    """What a scheduler sweeps besides due refreshes, each part failing on its own."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.purged_at: datetime | None = None

    def run(self, now: datetime) -> None:
        """Sweep the uploads no job will read; hourly, queue the expiry of static members past
        their ttl and of events past their workspace's retention, delete finished streaming
        sweep jobs past an hour, mark test messages left ``sending`` failed, delete delivery
        log messages past its retention, and purge expired idempotency keys."""
        try:
            with self.session_factory() as session:
                imports.sweep_uploads(session, data_dir=self.settings.data_dir, now=now)
        except Exception:
            log.exception("sweeping uploads failed; trying again next tick")
        if self.purged_at is not None and now - self.purged_at < PURGE_EVERY:
            return
        try:
            with self.session_factory.begin() as session:
                queue_expiries(session, now=now)
        except Exception:
            log.exception("queueing expiries failed; trying again next hour")
        try:
            with self.session_factory.begin() as session:
                queue_event_expiries(session, now=now)
        except Exception:
            log.exception("queueing event expiries failed; trying again next hour")
        try:
            with self.session_factory.begin() as session:
                outbox.prune_all(session)
        except Exception:
            log.exception("pruning the membership outbox failed; trying again next hour")
        try:
            with self.session_factory.begin() as session:
                maintenance.fail_interrupted(session, settings=self.settings, now=now)
        except Exception:
            log.exception("failing interrupted test messages failed; trying again next hour")
        try:
            deleted = PURGE_BATCH
            while deleted == PURGE_BATCH:  # short transactions: few rows locked at a time
                with self.session_factory.begin() as session:
                    deleted = maintenance.purge_delivery_log(
                        session,
                        retention_days=self.settings.delivery_log_retention_days,
                        now=now,
                        limit=PURGE_BATCH,
                    )
        except Exception:
            log.exception("purging the delivery log failed; trying again next hour")
        try:
            with self.session_factory.begin() as session:
                evaluation.prune(session, now=now)
        except Exception:
            log.exception("pruning finished sweep jobs failed; trying again next hour")
        try:
            with self.session_factory.begin() as session:
                maintenance.purge_idempotency_keys(
                    session,
                    workspace_id=None,
                    ttl_hours=self.settings.idempotency_ttl_hours,
                    now=now,
                )
            self.purged_at = now
        except Exception:
            log.exception("purging expired idempotency keys failed; trying again next tick")


class Scheduler:
    """A thread that calls :func:`tick` and :class:`Housekeeping` every
    ``AUDIENCES_SCHEDULER_SECONDS`` until stopped."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        stopping: threading.Event,
    ) -> None:
        self.session_factory = session_factory
        self.seconds = settings.scheduler_seconds
        self.sweep_seconds = settings.streaming_sweep_seconds
        self.housekeeping = Housekeeping(session_factory, settings)
        self.stopping = stopping
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (after ``stopping`` is set)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # Wake at the shorter interval: sweeps are due more often than refreshes, and a tick
        # between its slots finds the refresh jobs of the slot queued already.
        while not self.stopping.wait(min(self.seconds, self.sweep_seconds)):
            try:
                with self.session_factory.begin() as session:
                    tick(session, now=utcnow(), slot_seconds=self.seconds)
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")
            try:
                with self.session_factory.begin() as session:
                    queue_syncs(session, now=utcnow())
            except Exception:
                log.exception("queueing due syncs failed; trying again next tick")
            try:
                with self.session_factory.begin() as session:
                    queue_deliveries(session, now=utcnow())
            except Exception:
                log.exception("queueing deliveries failed; trying again next tick")
            try:
                with self.session_factory.begin() as session:
                    queue_sweeps(session, now=utcnow(), sweep_seconds=self.sweep_seconds)
            except Exception:
                log.exception("queueing streaming sweeps failed; trying again next tick")
            self.housekeeping.run(utcnow())

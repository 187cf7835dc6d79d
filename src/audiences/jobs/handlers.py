"""Job handlers by name (``domain.verb``): a registry, the built-in handlers, plugin loading.

A handler is ``function(context, job) -> result``: it does the work through services, reports
progress, counts and errors on the :class:`~audiences.jobs.context.JobContext`, and returns a
JSON value that becomes the job's ``result``. It must be idempotent: the queue runs a job at
least once (see :mod:`audiences.queue`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from audiences.jobs import destination_jobs, event_jobs, membership_jobs, sync_jobs
from audiences.jobs.context import JobContext
from audiences.kit.clock import utcnow
from audiences.queue import HANDLER_NAME, ClaimedJob
from audiences.rules import evaluation_order
from audiences.services import (
    evaluation,
    events,
    freshness,
    imports,
    lifecycle,
    maintenance,
    outbox,
    static_members,
    syncs,
)
from audiences.store.tables import AudienceRow, RunRow

Handler = Callable[[JobContext, ClaimedJob], Any]


class HandlerRegistry:
    """Handlers by name. Workers claim only jobs whose handler their registry knows."""

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        needing_profiles: frozenset[str] = frozenset(),
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._needing_profiles: set[str] = set()
        for name, handler in (handlers or {}).items():
            self.add(name, handler, needs_profiles=name in needing_profiles)

    def add(self, name: str, handler: Handler, *, needs_profiles: bool = False) -> None:
        """Register ``handler`` under ``name``; a name is registered once.

        ``needs_profiles`` marks a handler that reads or writes profile data: only a worker
        with a profile engine (``context.runtime``) claims its jobs. With the embedded DuckDB
        engine that is the server process, which owns the file; with a shared engine
        (PostgreSQL) every ``audiences worker`` process opens it too.
        """
        if not HANDLER_NAME.match(name):
            raise ValueError(f"handler name {name!r} is not `domain.verb`")
        if self._handlers.get(name, handler) is not handler:
            raise ValueError(f"a handler named {name!r} is already registered")
        self._handlers[name] = handler
        if needs_profiles:
            self._needing_profiles.add(name)

    def register(self, name: str, *, needs_profiles: bool = False) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def decorate(handler: Handler) -> Handler:
            self.add(name, handler, needs_profiles=needs_profiles)
            return handler

        return decorate

    def runnable(self, *, with_profiles: bool) -> frozenset[str]:
        """The names a worker may claim: all of them, or those that need no profile engine."""
        if with_profiles:
            return self.names()
        return frozenset(set(self._handlers) - self._needing_profiles)

    def get(self, name: str) -> Handler:
        """The handler named ``name``; ``KeyError`` if none is."""
        return self._handlers[name]

    def names(self) -> frozenset[str]:
        """Every registered name."""
        return frozenset(self._handlers)

    def copy(self) -> HandlerRegistry:
        """An independent registry with the same handlers (tests extend a copy)."""
        return HandlerRegistry(self._handlers, frozenset(self._needing_profiles))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))


HANDLERS = HandlerRegistry()
"""The process's registry: the built-ins below, plus what plugin modules register."""


@HANDLERS.register("maintenance.purge_idempotency_keys")
def purge_idempotency_keys(context: JobContext, job: ClaimedJob) -> dict[str, int]:
    """Delete the workspace's idempotency keys older than ``AUDIENCES_IDEMPOTENCY_TTL_HOURS``."""
    with context.session() as session:
        deleted = maintenance.purge_idempotency_keys(
            session,
            workspace_id=job.workspace_id,
            ttl_hours=context.settings.idempotency_ttl_hours,
            now=utcnow(),
        )
    context.counts["deleted"] = deleted
    return {"deleted": deleted}


HANDLERS.add(static_members.WRITE_HANDLER, membership_jobs.write_members, needs_profiles=True)
HANDLERS.add(static_members.IMPORT_HANDLER, membership_jobs.import_rows, needs_profiles=True)
HANDLERS.add(static_members.EXPIRE_HANDLER, membership_jobs.expire_members)
HANDLERS.add(imports.EVENT_IMPORT_HANDLER, event_jobs.import_events, needs_profiles=True)
HANDLERS.add(events.EXPIRE_HANDLER, event_jobs.expire_events, needs_profiles=True)
HANDLERS.add(syncs.SYNC_HANDLER, sync_jobs.sync_audience, needs_profiles=True)
HANDLERS.add(outbox.DELIVER_HANDLER, destination_jobs.deliver, needs_profiles=True)


def load_modules(names: str) -> list[str]:
    """Import the comma-separated modules in ``names``; each registers handlers on import."""
    loaded = []
    for name in (part.strip() for part in names.split(",")):
        if name:
            importlib.import_module(name)
            loaded.append(name)
    return loaded


@HANDLERS.register("evaluation.run", needs_profiles=True)
def run_evaluation(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Evaluate one dynamic audience (payload ``audience_id``, ``trigger``); a rerun is harmless.
    An audience made inactive or archived since the job was queued is left as it is."""
    audience_id = str(job.payload["audience_id"])
    with context.session() as session:
        audience = session.get(AudienceRow, audience_id)
        if audience is None or audience.workspace_id != job.workspace_id:
            return {"skipped": "the audience no longer exists"}
        if not lifecycle.allows(audience, lifecycle.Action.AUTOMATIC):
            return {"skipped": "the audience is inactive or archived"}
        run = evaluation.refresh(
            session,
            runtime=context.runtime,
            audience=audience,
            trigger=str(job.payload.get("trigger", "job")),
        )
        return _run_result(run)


@HANDLERS.register("evaluation.refresh_due", needs_profiles=True)
def refresh_due(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Refresh the workspace's due scheduled audiences, each after those it depends on.

    Each audience is refreshed in a transaction of its own, so one failing run (recorded as
    failed, its previous members still served) does not hold back the others.
    """
    with context.session() as session:
        due = freshness.due(session, now=utcnow(), workspace_id=job.workspace_id)
        graph = {a.key: [k for k in a.dependencies if k in {d.key for d in due}] for a in due}
        order = evaluation_order(graph)
        ids = {a.key: a.id for a in due}
    context.progress(0, len(order))
    results = []
    for done, key in enumerate(order, start=1):
        with context.session() as session:
            audience = session.get(AudienceRow, ids[key])
            if audience is not None and lifecycle.allows(audience, lifecycle.Action.AUTOMATIC):
                run = evaluation.refresh(
                    session, runtime=context.runtime, audience=audience, trigger="scheduled"
                )
                context.count(run.status)
                results.append({"audience": key, **_run_result(run)})
        context.progress(done, len(order))
    return {"runs": results}


@HANDLERS.register(evaluation.SWEEP_HANDLER, needs_profiles=True)
def sweep_streaming(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Move the workspace's streaming behavioural audiences with time: the profiles whose
    events a window boundary crossed since the last sweep are evaluated again, as of now
    (see ``services/evaluation/sweeps.py``). The result's ``until`` is where the next sweep
    starts; a failed sweep leaves it, so the next one covers its period too."""
    until = utcnow()
    with context.session() as session:
        since = evaluation.last_until(session, job.workspace_id)
        if since is not None and since > until:  # another process's clock ran ahead
            until = since
        swept = evaluation.sweep(
            session,
            runtime=context.runtime,
            workspace_id=job.workspace_id,
            since=since,
            until=until,
        )
    context.count("profiles", len(swept.candidates))
    return {
        "since": None if since is None else since.isoformat(),
        "until": until.isoformat(),
        "profiles": len(swept.candidates),
        "refreshed": swept.refreshed,
    }


def _run_result(run: RunRow) -> dict[str, Any]:
    return {"run_id": run.id, "status": run.status, "size": run.size, "error": run.error}

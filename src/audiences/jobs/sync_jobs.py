"""The ``membership.sync`` job: pull an external audience's members from its file or SQL
source and record the sync (see :mod:`audiences.services.syncs`).

The source is read outside any transaction (a download may take a while); the members are
then replaced and the run recorded in one. A failed sync is recorded too (a failed run, the
members kept, the sync state ``failed`` with why), then fails its job without a retry: the
refresh policy retries it sooner, as a failed evaluation is (``services/freshness``). A rerun
after a crash pulls the source again, which is harmless: replacing with the same members
changes nothing.
"""

from __future__ import annotations

from typing import Any

from pyroaring import BitMap

from audiences.jobs.context import JobContext, JobFailed
from audiences.queue import ClaimedJob
from audiences.schemas.syncs import PulledSource
from audiences.services import lifecycle, sync_sources, syncs
from audiences.services.import_formats import Row
from audiences.services.sync_sources import SyncFailed
from audiences.store.tables import AudienceRow

PULLS = 3
"""Times a sync pulls its source when the source keeps changing while it is pulled."""


def sync_audience(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Sync one external audience (payload ``audience_id``); skipped when it is gone, parked,
    or no longer has a file or SQL source. A source changed while it was pulled is pulled
    again (its own change found this job running and queued no other)."""
    audience_id = str(job.payload["audience_id"])
    rules = sync_sources.rules_of(context.settings, dialect=context.runtime.profiles.dialect)
    for _ in range(PULLS):
        with context.session() as session:
            audience = session.get(AudienceRow, audience_id)
            skipped = _skipped(audience, job)
            if skipped is not None or audience is None:
                if audience is not None and audience.workspace_id == job.workspace_id:
                    syncs.release(session, audience, job_id=job.id)
                return {"skipped": skipped}
            source = syncs.pulled(audience)
            assert source is not None  # _skipped said so
        members, read = _pull(context, job, audience_id, source, rules)
        with context.session() as session:
            audience = session.get_one(AudienceRow, audience_id)
            if syncs.pulled(audience) != source:
                continue
            run = syncs.record(
                session,
                audience=audience,
                members=members,
                job_id=job.id,
                cache=context.runtime.bitmaps,
            )
        context.counts.update(entered=run.entered or 0, exited=run.exited or 0)
        return {
            "run_id": run.id,
            "size": run.size,
            "entered": run.entered,
            "exited": run.exited,
            "rows": read,
            "invalid": context.counts["invalid"],
        }
    raise JobFailed(f"the source changed {PULLS} times while it was pulled; sync it again")


def _skipped(audience: AudienceRow | None, job: ClaimedJob) -> str | None:
    """Why the job has nothing to sync, or None."""
    if audience is None or audience.workspace_id != job.workspace_id:
        return "the audience no longer exists"
    if syncs.pulled(audience) is None:
        return "the audience has no file or SQL source"
    if not lifecycle.allows(audience, lifecycle.Action.AUTOMATIC):
        return "the audience is inactive or archived"
    return None


def _pull(
    context: JobContext,
    job: ClaimedJob,
    audience_id: str,
    source: PulledSource,
    rules: sync_sources.SourceRules,
) -> tuple[BitMap, int]:
    """The members the source names and the rows read; a failure is recorded (a failed run,
    the members kept) and fails the job without a retry."""
    context.counts = {"rows": 0, "invalid": 0}

    def refused(row: Row) -> None:
        context.count("invalid")
        context.error(row.message or "refused", code=row.code or "row_invalid", row=row.number)

    try:
        members, read = sync_sources.pull(
            context.runtime,
            workspace_id=job.workspace_id,
            source=source,
            rules=rules,
            on_row_error=refused,
        )
    except SyncFailed as failure:
        with context.session() as session:
            audience = session.get_one(AudienceRow, audience_id)
            syncs.record_failure(session, audience=audience, failure=failure, job_id=job.id)
        raise JobFailed(f"{failure.code}: {failure.message}") from None
    context.counts["rows"] = read
    return members, read

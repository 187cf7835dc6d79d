"""The ``membership.sync`` job: pull an external audience's members from its file or SQL
source and record the sync (see :mod:`audiences.services.syncs`).

The source is read outside any transaction (a download may take a while); the members are
then replaced and the run recorded in one, the audience locked while its source is compared.
A failed sync is recorded too (a failed run, the members kept, the sync state ``failed`` with
why), then fails its job without a retry: the refresh policy retries it sooner, as a failed
evaluation is (``services/freshness``); an unexpected error is recorded the same way, then
raised to the worker. A rerun
after a crash pulls the source again, which is harmless: replacing with the same members
changes nothing.
"""

from __future__ import annotations

from typing import Any

from pyroaring import BitMap
from sqlalchemy.exc import OperationalError

from audiences.errors import SyncFailed
from audiences.jobs.context import Cancelled, Interrupted, JobContext, JobFailed
from audiences.kit.logs import get_logger
from audiences.queue import ClaimedJob, LeaseLost
from audiences.schemas.syncs import PulledSource, SqlSource
from audiences.services import lifecycle, sync_sources, syncs
from audiences.services.import_formats import Row
from audiences.services.sync_progress import Tracker
from audiences.services.sync_rules import SourceRules
from audiences.store.tables import AudienceRow

PULLS = 3
"""Times a sync pulls its source when the source keeps changing while it is pulled."""
UNEXPECTED = "sync_job_failed"
"""The code of a sync that stopped on an error no source check names (a bug, the engine gone),
or whose source kept changing: recorded as a failed sync so the refresh policy backs off."""

log = get_logger("audiences.jobs")


def sync_audience(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Sync one external audience (payload ``audience_id``); skipped when it is gone, parked,
    or no longer has a file or SQL source. A source changed while it was pulled is pulled
    again (its own change found this job running and queued no other), whether the pull of
    the old one succeeded or failed. Any other error is recorded as a failed sync too, so the
    refresh policy backs off as for a failure it knows, then fails the job as before."""
    audience_id = str(job.payload["audience_id"])
    try:
        return _sync(context, job, audience_id)
    except (_Recorded, Cancelled, Interrupted, LeaseLost):
        raise  # recorded, or the job's own end (a cancelled job reads as a failed sync)
    except Exception as error:
        log.exception("sync job %s stopped on an unexpected error", job.id)
        message = (
            f"the sync stopped on an unexpected error ({type(error).__name__}); "
            "the server log has the details"
        )
        _record(context, job, audience_id, SyncFailed(message, code=UNEXPECTED))
        raise


def _sync(context: JobContext, job: ClaimedJob, audience_id: str) -> dict[str, Any]:
    rules = sync_sources.rules_of(context.settings, dialect=context.runtime.profiles.dialect)
    rules = rules.for_workspace(job.workspace_id)
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
        try:
            members, read = _pull(context, job, source, rules)
        except SyncFailed as failure:
            if _record(context, job, audience_id, failure, pulled=source):
                raise _Recorded(f"{failure.code}: {failure.message}") from None
            continue  # the source changed meanwhile: its failure is not this source's
        with context.session() as session:
            # Locked before it is compared: a change of source committed from now on waits,
            # then finds this sync recorded and queues another (``syncs.queue_sync``).
            syncs.lock_audience(session, audience_id)
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
    changing = SyncFailed(
        f"the source changed {PULLS} times while it was pulled; sync it again", code=UNEXPECTED
    )
    _record(context, job, audience_id, changing)
    raise _Recorded(changing.message)


class _Recorded(JobFailed):
    """A failed sync already recorded (run and sync state): the job fails, nothing more."""


def _record(
    context: JobContext,
    job: ClaimedJob,
    audience_id: str,
    failure: SyncFailed,
    *,
    pulled: PulledSource | None = None,
) -> bool:
    """Record a failed sync (a failed run, the members kept), unless the audience is gone or,
    given ``pulled``, its source is no longer that one; whether it was recorded."""
    with context.session() as session:
        syncs.lock_audience(session, audience_id)
        audience = session.get(AudienceRow, audience_id)
        if audience is None or audience.workspace_id != job.workspace_id:
            return False
        if pulled is not None and syncs.pulled(audience) != pulled:
            return False
        syncs.record_failure(session, audience=audience, failure=failure, job_id=job.id)
    return True


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
    source: PulledSource,
    rules: SourceRules,
) -> tuple[BitMap, int]:
    """The members the source names and the rows read (``SyncFailed`` when it cannot); the
    job's progress is the rows read of the rows the source holds (once counted), its counts
    the bytes fetched (``bytes_fetched``, of ``bytes_total`` when the size is known) and the
    rows of this pull (``rows`` of ``rows_total``: the job's ``processed`` never goes back
    when a changed source is pulled again, these start over)."""
    context.counts = {"rows": 0, "invalid": 0}

    def refused(row: Row) -> None:
        context.count("invalid")
        context.error(row.message or "refused", code=row.code or "row_invalid", row=row.number)

    def report(tracker: Tracker) -> None:
        if not isinstance(source, SqlSource):
            context.counts["bytes_fetched"] = tracker.bytes_fetched
            if tracker.bytes_total is not None:
                context.counts["bytes_total"] = tracker.bytes_total
        context.counts["rows"] = tracker.rows_read
        if tracker.rows_total is None:
            context.counts.pop("rows_total", None)
        else:
            context.counts["rows_total"] = tracker.rows_total
        try:
            context.progress(tracker.rows_read, tracker.rows_total)  # sees a cancel too
        except OperationalError as error:  # a busy or briefly gone database: report later
            log.warning("sync job %s could not save its progress: %s", job.id, type(error).__name__)

    members, read = sync_sources.pull(
        context.runtime,
        workspace_id=job.workspace_id,
        source=source,
        rules=rules,
        on_row_error=refused,
        tracker=Tracker(report=report),
    )
    context.counts["rows"] = read
    return members, read

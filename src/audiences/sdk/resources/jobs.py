"""``/v1/jobs``: long work (imports, evaluations, member writes) and waiting for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from audiences.schemas.common import Page
from audiences.schemas.jobs import Job, JobState
from audiences.sdk._call import Call, Fields, clean, endpoint, model, reading, reading_page
from audiences.sdk._resource import (
    AsyncResource,
    SyncResource,
    pages,
    pages_async,
    sends,
    sends_async,
)

PATH = "/v1/jobs"
FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
Progress = Callable[[Job], None]
"""Called with the job each time :meth:`Jobs.wait` reads it."""


class Calls:
    """The requests of the job resource."""

    @staticmethod
    def list(
        *,
        kind: str | list[str] | None = None,
        state: str | list[str] | None = None,
        subject_id: str | list[str] | None = None,
        q: str | None = None,
        sort: str | None = None,
        fields: Fields = None,
        limit: int | None = None,
    ) -> Call[Page[Job]]:
        """Every job matching the filters (``subject_id``: an audience's)."""
        params = clean(
            {"kind": kind, "state": state, "subject_id": subject_id, "q": q, "sort": sort}
            | {"limit": limit, "fields": fields}
        )
        return Call("GET", PATH, reading_page(Job, fields), params=params)

    @staticmethod
    def get(job_id: str, *, fields: Fields = None) -> Call[Job]:
        """One job: state, progress, counts, errors (``fields``: only these)."""
        params = clean({"fields": fields})
        return Call("GET", endpoint(PATH + "/{}", job_id), reading(Job, fields), params=params)

    @staticmethod
    def cancel(job_id: str) -> Call[Job]:
        """Cancel it (a running job stops at its next checkpoint; 409 once it ended)."""
        return Call("POST", endpoint(PATH + "/{}/cancel", job_id), model(Job), safe=True)

    @staticmethod
    def errors_csv(job_id: str) -> Call[str]:
        """Every problem the job reported, as CSV (``row,line,code,message``)."""
        return Call(
            "GET", endpoint(PATH + "/{}/errors.csv", job_id), lambda response: response.text
        )


class Waiting:
    """The polling schedule of ``wait``: the first look soon, then every ``interval`` s."""

    def __init__(self, interval: float, timeout: float | None) -> None:
        self.delay = min(0.05, interval)
        self.interval = interval
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def next_delay(self, job: Job) -> float:
        """How long to sleep before the next look; ``TimeoutError`` past the deadline."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"job {job.id} is still {job.state.value}; it goes on running")
        delay, self.delay = self.delay, min(self.delay * 2, self.interval)
        return delay


def _job_id(job: Job | str) -> str:
    return job if isinstance(job, str) else job.id


class Jobs(SyncResource):
    """Jobs: ``client.jobs``."""

    list = pages(Calls.list, Job)
    get = sends(Calls.get)
    cancel = sends(Calls.cancel)
    errors_csv = sends(Calls.errors_csv)

    def wait(
        self,
        job: Job | str,
        *,
        on_progress: Progress | None = None,
        interval: float = 0.5,
        timeout: float | None = None,
    ) -> Job:
        """Poll the job until it has succeeded, failed or been cancelled, and return it,
        calling ``on_progress`` with each reading. Interrupting the wait leaves the job running."""
        waiting = Waiting(interval, timeout)
        while True:
            current = self._http.run(Calls.get(_job_id(job)))
            if on_progress is not None:
                on_progress(current)
            if current.state in FINISHED:
                return current
            time.sleep(waiting.next_delay(current))


class AsyncJobs(AsyncResource):
    """Jobs: ``client.jobs`` of an :class:`AsyncClient`."""

    list = pages_async(Calls.list, Job)
    get = sends_async(Calls.get)
    cancel = sends_async(Calls.cancel)
    errors_csv = sends_async(Calls.errors_csv)

    async def wait(
        self,
        job: Job | str,
        *,
        on_progress: Progress | None = None,
        interval: float = 0.5,
        timeout: float | None = None,
    ) -> Job:
        """Poll the job until it has finished and return it (see :meth:`Jobs.wait`)."""
        waiting = Waiting(interval, timeout)
        while True:
            current = await self._http.run(Calls.get(_job_id(job)))
            if on_progress is not None:
                on_progress(current)
            if current.state in FINISHED:
                return current
            await asyncio.sleep(waiting.next_delay(current))

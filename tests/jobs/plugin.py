"""Handlers for worker processes in tests, loaded with ``AUDIENCES_JOB_HANDLER_MODULES``.

Their side effects go to files named in the payload, so a test can count executions across
processes without touching the queue's own tables.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from audiences.jobs.context import JobContext
from audiences.jobs.handlers import HANDLERS
from audiences.queue import ClaimedJob

ITEMS = 10
HALFWAY = 5


@HANDLERS.register("tests.record")
def record(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Append one line per execution to ``payload["log"]`` (O_APPEND lines do not interleave)."""
    time.sleep(0.01)
    with open(job.payload["log"], "a") as log:
        log.write(f"{job.id} {os.getpid()}\n")
    return {"pid": os.getpid()}


@HANDLERS.register("tests.items")
def items(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Apply ``ITEMS`` idempotent effects (one file each), checkpointing after each one.

    The first attempt stops for good after ``HALFWAY`` items, beating its heartbeat, so a
    test can kill its process there; a later attempt resumes from the last checkpoint.
    """
    folder = Path(job.payload["dir"])
    for index in range(context.resume_from, ITEMS):
        if job.attempt == 1 and index == HALFWAY:
            (folder / "halfway").write_text(str(os.getpid()))
            while True:
                context.heartbeat()
                time.sleep(0.05)
        effect = folder / f"item-{index}"
        effect.write_text(job.id)
        with open(folder / "executions.log", "a") as log:
            log.write(f"{index} {job.attempt}\n")
        context.count("items")
        context.progress(index + 1, ITEMS)
    return {"items": ITEMS}

"""Waiting for a job on the command line: a Rich progress bar driven by the job's own
``progress`` (rows processed of total), and Ctrl-C stops the wait, not the job."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from audiences.cli.context import INTERRUPTED, UNAVAILABLE, fail
from audiences.cli.output import Out, stderr

if TYPE_CHECKING:
    from rich.progress import Progress

    from audiences.schemas.jobs import Job
    from audiences.sdk import Client


def bar() -> Progress:
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    )


def upload(file: Path, out: Out, send: Callable[[Callable[[int], None]], Job]) -> Job:
    """Upload ``file`` by ``send`` (given the callback for bytes sent) with a progress bar; an
    upload cut on every try exits 5 with how far it went and what to do (run it again: an
    upload's key is derived from its file, so the server imports it once)."""
    from audiences.sdk import Unreachable

    size = file.stat().st_size
    sent = [0]
    with bar() as progress:
        task = progress.add_task(f"upload {file.name}", total=size, visible=not out.quiet)

        def uploaded(count: int) -> None:
            sent[0] = count
            progress.update(task, completed=count)

        try:
            return send(uploaded)
        except Unreachable as exc:
            fail(
                f"the upload of {file} was interrupted after {sent[0]:,} of {size:,} bytes "
                f"({exc.detail})",
                UNAVAILABLE,
                "run the same command again: the file is sent again from its start, and the "
                "server imports it once however many uploads of it were tried",
            )


def follow(client: Client, job: Job, out: Out) -> Job:
    """Wait for ``job`` to finish, showing its progress unless quiet or JSON; exit 130 on
    Ctrl-C, saying the job goes on."""
    try:
        with ctrl_c() as pressed:

            def check(current: Job) -> None:
                if pressed.is_set():
                    raise KeyboardInterrupt

            if out.quiet or out.as_json:
                return client.jobs.wait(job, on_progress=check)
            with bar() as progress:
                task = progress.add_task(f"{job.handler} {job.id}", total=None)

                def show(current: Job) -> None:
                    check(current)
                    done = current.progress
                    progress.update(
                        task,
                        completed=done.processed,
                        total=done.total,
                        description=f"{current.handler} {current.state.value}{fetching(current)}",
                    )

                return client.jobs.wait(job, on_progress=show)
    except KeyboardInterrupt:
        fail(
            f"stopped waiting; job {job.id} goes on on the server",
            INTERRUPTED,
            f"follow it with `audiences jobs wait {job.id}`",
        )


@contextmanager
def ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C noted rather than raised while waiting: the wait stops at its next look at the
    job (half a second at most between looks). A ``KeyboardInterrupt`` raised wherever the
    signal lands could fall inside a lock of the progress bar or the HTTP pool and leave it
    held, hanging the exit. A second Ctrl-C interrupts at once (a server that does not
    answer)."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed  # only the main thread may take signals: Ctrl-C raises as usual
        return

    def note(signum: int, frame: FrameType | None) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def fetching(job: Job) -> str:
    """`` fetched 1.2 of 3.4 MB`` while a sync's file comes in (its rows not counted yet)."""
    fetched = job.counts.get("bytes_fetched")
    if fetched is None or job.progress.total is not None:
        return ""
    size = job.counts.get("bytes_total")
    of = "" if size is None else f" of {size / 1e6:,.1f}"
    return f" fetched {fetched / 1e6:,.1f}{of} MB"


def report(job: Job, out: Out) -> None:
    """Print a finished job and exit 1 unless it succeeded."""
    from audiences.schemas.jobs import JobState

    out.one(job, ("id", "handler", "state", "progress", "counts", "result", "error_count"))
    if job.state is not JobState.SUCCEEDED:
        fail(f"job {job.id} {job.state.value}: {job.last_error or 'see its errors'}")

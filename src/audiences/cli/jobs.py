"""``audiences jobs …``: long work (imports, evaluations, member writes)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from audiences.cli.context import connected
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet
from audiences.cli.progress import follow, report

app = typer.Typer(help="Jobs: list, get, wait, cancel, errors.", no_args_is_help=True)
COLUMNS = ("id", "kind", "handler", "state", "progress", "subject_id", "created_at")
FIELDS = (
    "id", "kind", "handler", "subject_id", "state", "progress", "counts", "result", "errors",
    "error_count", "last_error", "attempts", "created_at", "finished_at",
)  # fmt: skip
JobId = Annotated[str, typer.Argument(help="The job's id.")]


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, …")] = None,
    kind: Annotated[str | None, typer.Option(help="import, evaluation, export, …")] = None,
    subject: Annotated[str | None, typer.Option(help="Working on this audience id.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List jobs."""
    with connected(ctx) as client:
        pager = client.jobs.list(state=state, kind=kind, subject_id=subject, limit=limit)
        show(Out(as_json, quiet), pager.starting_at(cursor), COLUMNS, every=every)


@app.command("get")
def get_job(ctx: typer.Context, job_id: JobId, as_json: Json = False, quiet: Quiet = False) -> None:
    """Show one job: state, progress, counts, errors."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.jobs.get(job_id), FIELDS)


@app.command("wait")
def wait_job(
    ctx: typer.Context, job_id: JobId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Wait for a job to finish, with a progress bar; exit 1 unless it succeeded."""
    out = Out(as_json, quiet)
    with connected(ctx) as client:
        report(follow(client, client.jobs.get(job_id), out), out)


@app.command("cancel")
def cancel_job(
    ctx: typer.Context, job_id: JobId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Cancel a job (exit 4 once it has finished)."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.jobs.cancel(job_id), FIELDS)


@app.command("errors")
def job_errors(ctx: typer.Context, job_id: JobId) -> None:
    """Print every problem of a job as CSV (row, line, code, message)."""
    with connected(ctx) as client:
        sys.stdout.write(client.jobs.errors_csv(job_id))

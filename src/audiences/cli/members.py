"""Top-level commands about an audience's members: ``members``, ``changes``, ``runs``,
``import``, ``export``, ``refresh``, ``explain``, ``preview`` (and ``evaluate``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audiences.cli import profiles
from audiences.cli.context import INTERRUPTED, connected, fail
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet, echo_json, rule_tree, stdout
from audiences.cli.progress import follow, report, upload
from audiences.cli.refs import audience_id
from audiences.schemas.imports import ImportMode

if TYPE_CHECKING:
    from audiences.schemas.memberships import Run
    from audiences.sdk import Client

Ref = Annotated[str, typer.Argument(help="The audience's key or id.")]
RUN_COLUMNS = ("id", "number", "trigger", "status", "size", "entered", "exited", "started_at")


def members(
    ctx: typer.Context,
    ref: Ref,
    as_of: Annotated[str | None, typer.Option(help="A run id: the members as of that run.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Members per page.")] = 200,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List an audience's members, one id per line (a page, or every one with --all)."""
    out = Out(as_json, quiet)
    with connected(ctx) as client:
        pager = client.audiences.members(audience_id(client, ref), as_of=as_of, limit=limit)
        pager = pager.starting_at(cursor)
        pages = pager.pages() if every else iter([pager.first_page()])
        write = sys.stdout.write
        last = None
        for page in pages:
            last = page
            if as_json:
                for member in page.data:
                    write(json.dumps(member.id) + "\n")
            else:
                write("".join(f"{member.id}\n" for member in page.data))
        if last is not None and last.next_cursor and not every:
            out.note(f"{last.total} in all; next page: --cursor {last.next_cursor} (or --all)")


def changes(
    ctx: typer.Context,
    ref: Ref,
    since: Annotated[str | None, typer.Option(help="A run id: changes since it.")] = None,
    limit: Limit = 200,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Who entered and who exited since a run (without --since: in the latest run)."""
    with connected(ctx) as client:
        pager = client.audiences.changes(audience_id(client, ref), since=since, limit=limit)
        show(Out(as_json, quiet), pager.starting_at(cursor), ("id", "change"), every=every)


def runs(
    ctx: typer.Context,
    ref: Ref,
    limit: Limit = 20,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """An audience's evaluation runs, newest first."""
    with connected(ctx) as client:
        pager = client.audiences.runs(audience_id(client, ref), limit=limit)
        show(Out(as_json, quiet), pager.starting_at(cursor), RUN_COLUMNS, every=every)


def import_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, TSV, NDJSON or text (gzipped or not).")],
    into: Annotated[str, typer.Option("--into", help="The static audience's key or id.")],
    mode: Annotated[ImportMode, typer.Option(help="Add, remove, or replace the members.")] = (
        ImportMode.ADD
    ),
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, tsv, ndjson or text (default: suffix).")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="The id column.")] = None,
    attributes: Annotated[
        str | None, typer.Option(help="Columns to upsert as attributes: a,b or *.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the import to finish.")] = True,
    again: Annotated[
        bool,
        typer.Option("--again", help="Import the file anew even if this upload was made before."),
    ] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Import a file of ids into a static audience, streamed from disk, with a progress bar
    (upload, then the job's rows); exit 1 if the job fails. Run again after an interrupted
    upload: the same file, audience and options are never imported twice (--again does)."""
    from audiences.sdk._call import new_key

    out = Out(as_json, quiet)
    with connected(ctx) as client:
        target = audience_id(client, into)
        job = upload(
            file,
            out,
            lambda uploaded: client.imports.create(
                target,
                file,
                mode=mode.value,
                format=file_format,
                id_column=id_column,
                attributes=attributes,
                on_upload=uploaded,
                idempotency_key=new_key() if again else None,
            ),
        )
        if not wait:
            out.one(job, ("id", "handler", "state"))
            return
        report(follow(client, job, out), out)


def export(
    ctx: typer.Context,
    ref: Ref,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default stdout).")
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="csv or ndjson.")] = "csv",
    raw: Annotated[bool, typer.Option(help="CSV: ids exactly as stored.")] = False,
    quiet: Quiet = False,
) -> None:
    """Export every member of an audience as CSV or NDJSON, streamed."""
    with connected(ctx) as client:
        stream = client.audiences.export(audience_id(client, ref), format=file_format, raw=raw)
        if output is None:
            for chunk in stream:
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        else:
            written = stream.to_file(output)
            Out(quiet=quiet).note(f"wrote {written:,} bytes to {output}")


def refresh(
    ctx: typer.Context,
    ref: Ref,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate an audience now (static ones: expire their members); --wait for the run."""
    out = Out(as_json, quiet)
    with connected(ctx) as client:
        target = audience_id(client, ref)
        run = client.audiences.refresh(target)
        if wait:
            run = _wait_run(client, target, run, out)
        out.one(run, RUN_COLUMNS)
        if run.status == "failed":
            fail(f"run {run.id} failed: {run.error}")


def _wait_run(client: Client, audience: str, run: Run, out: Out) -> Run:
    try:
        delay = 0.05
        while run.status == "running":
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            run = client.audiences.run(audience, run.id)
        return run
    except KeyboardInterrupt:
        fail(f"stopped waiting; run {run.id} goes on on the server", INTERRUPTED)


def explain(
    ctx: typer.Context,
    ref: Ref,
    profile_id: Annotated[str, typer.Argument(help="The profile's external id.")],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Why a profile is (not) a member: the rule tree with each node's value."""
    with connected(ctx) as client:
        answer = client.audiences.explain(audience_id(client, ref), profile_id)
    if as_json:
        echo_json(answer.model_dump(mode="json"))
    elif quiet:
        typer.echo("true" if answer.member else "false")
    elif answer.explanation:
        stdout.print(rule_tree(answer.explanation, f"{profile_id} in {ref}"))
    else:
        shown = "a member" if answer.member else "not a member"
        stdout.print(f"{profile_id} is {shown} of {ref} (no rule to explain)")


def preview(
    ctx: typer.Context,
    rule: Annotated[str, typer.Argument(help="A rule: SQL boolean text, or its JSON form.")],
    audience: Annotated[
        str | None, typer.Option(help="Compare with this audience's members (key or id).")
    ] = None,
    sample: Annotated[int, typer.Option(min=0, max=100, help="Members to list.")] = 10,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """What a rule would select now: size, sample, evaluation mode; with --audience, who would
    enter and exit. Nothing is stored."""
    body: str | dict[str, object] = rule
    if rule.lstrip().startswith("{"):
        body = json.loads(rule)
    with connected(ctx) as client:
        target = audience_id(client, audience) if audience else None
        result = client.audiences.preview(body, audience=target, sample=sample)
    fields = ["rule", "size", "evaluation_mode", "sample"]
    if result.entering is not None:
        fields += ["entering", "exiting", "entering_sample", "exiting_sample"]
    Out(as_json, quiet).one(result, fields)


def register(app: typer.Typer) -> None:
    """Add these commands to the top-level app."""
    app.command("members")(members)
    app.command("changes")(changes)
    app.command("runs")(runs)
    app.command("import")(import_file)
    app.command("export")(export)
    app.command("refresh")(refresh)
    app.command("explain")(explain)
    app.command("preview")(preview)
    app.command("evaluate")(profiles.evaluate)

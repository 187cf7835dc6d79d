"""``audiences events …`` and ``audiences event-names …``: send events from NDJSON, read a
profile's events, import a file of them, and list the names received.

``events send`` reads its input a batch at a time (at most 10,000 events, and a bounded size,
per call), so a file of any length runs in constant memory. Each line is checked against the
wire schema first: a malformed line is refused on its own instead of sinking its whole batch
(the API refuses a batch that breaks the schema whole).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from audiences.cli.context import connected, fail
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet, echo_json
from audiences.cli.progress import follow, report, upload

if TYPE_CHECKING:
    from audiences.schemas.events import EventWrite, EventWriteResults
    from audiences.sdk import Client

app = typer.Typer(help="Events: send, list, import.", no_args_is_help=True)
names_app = typer.Typer(help="Event names received: list.", no_args_is_help=True)
COLUMNS = ("timestamp", "event", "event_id", "properties", "received_at")
NAME_COLUMNS = ("name", "count", "first_seen_at", "last_seen_at")
REFUSAL_COLUMNS = ("line", "profile_id", "event_id", "code", "message")
MAX_EVENTS = 10_000
"""Events per call: the API's own limit (``schemas.events.MAX_EVENTS``; a test holds the two
together), written here so that the command line starts without the wire models."""
MAX_BATCH_BYTES = 16 << 20
"""Input bytes per call: well under the server's batch body limit (32 MiB by default)."""


@dataclass
class Tally:
    """What ``events send`` has done so far: the counts, and each refused line."""

    written: int = 0
    duplicates: int = 0
    failed: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, line: int, event: dict[str, Any], code: str, message: str) -> None:
        """Count one refused line."""
        self.failed += 1
        ids = {"profile_id": event.get("profile_id"), "event_id": event.get("event_id")}
        self.refusals.append({"line": line, **ids, "code": code, "message": message})

    def add(self, lines: list[int], answer: EventWriteResults) -> None:
        """Count a batch's answer; ``lines`` are its events' line numbers, in order."""
        self.written += answer.written
        self.duplicates += answer.duplicates
        for result in answer.results:
            if result.problem is not None:
                errors = result.problem.get("errors") or []
                codes = ", ".join(str(item.get("code")) for item in errors) or "event_invalid"
                said = "; ".join(str(item.get("message")) for item in errors)
                message = said or str(result.problem.get("detail", ""))
                event = {"profile_id": result.profile_id, "event_id": result.event_id}
                self.refuse(lines[result.index], event, codes, message)

    def summary(self) -> dict[str, Any]:
        """The counts and refusals as one JSON-ready object."""
        counts = {"written": self.written, "duplicates": self.duplicates, "failed": self.failed}
        refusals = sorted(self.refusals, key=lambda refusal: int(refusal["line"]))
        return counts | {"refusals": refusals}


Batch = tuple[list[int], list["EventWrite"]]


def _batches(lines: TextIO, tally: Tally) -> Iterator[Batch]:
    """The valid events of ``lines`` in batches (invalid lines are refused into ``tally``)."""
    numbers: list[int] = []
    batch: list[EventWrite] = []
    size = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        event = _parsed(number, line, tally)
        if event is None:
            continue
        length = len(line.encode())
        if batch and (len(batch) >= MAX_EVENTS or size + length > MAX_BATCH_BYTES):
            yield numbers, batch
            numbers, batch, size = [], [], 0
        numbers.append(number)
        batch.append(event)
        size += length
    if batch:
        yield numbers, batch


def _parsed(number: int, line: str, tally: Tally) -> EventWrite | None:
    from pydantic import ValidationError

    from audiences.schemas.events import EventWrite

    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        tally.refuse(number, {}, "malformed_json", str(exc))
        return None
    if not isinstance(data, dict):
        tally.refuse(number, {}, "malformed_json", "a line must be one JSON object")
        return None
    try:
        return EventWrite.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        message = f"{place}: {first['msg']}" if place else str(first["msg"])
        tally.refuse(number, data, "events_invalid", message)
        return None


def _send_all(client: Client, source: TextIO) -> Tally:
    tally = Tally()
    try:
        for numbers, batch in _batches(source, tally):
            tally.add(numbers, client.events.send(batch))
    except UnicodeDecodeError as exc:
        fail(
            f"the input is not UTF-8 ({exc.reason} at byte {exc.start}); sent so far: "
            f"{tally.written} written, {tally.duplicates} duplicates"
        )
    return tally


@app.command("send")
def send_events(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="An NDJSON file of events, or - for stdin.")],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Send events, one JSON object per line (as POST /v1/events takes them), in batches of
    at most 10,000; print what was written, the duplicates and every refused line (exit 1 if
    any was refused)."""
    out = Out(as_json, quiet)
    with connected(ctx) as client:
        if file == "-":
            tally = _send_all(client, sys.stdin)
        else:
            with Path(file).open(encoding="utf-8") as source:
                tally = _send_all(client, source)
    if as_json:
        echo_json(tally.summary())
    elif not quiet:
        counts = tally.summary()
        refusals = counts.pop("refusals")
        if refusals:
            out.many(refusals, REFUSAL_COLUMNS)
        out.one(counts)
    if tally.failed:
        fail(f"{tally.failed} event(s) refused; nothing of them was stored")


@app.command("list")
def list_events(
    ctx: typer.Context,
    profile_id: Annotated[str, typer.Argument(help="The profile's external id.")],
    event: Annotated[
        list[str] | None, typer.Option("--event", help="Only events with this name; repeat.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List a profile's events, newest first (--quiet: their event ids)."""
    with connected(ctx) as client:
        pager = client.events.history(profile_id, event, limit=limit).starting_at(cursor)
        if not quiet:
            show(Out(as_json, quiet), pager, COLUMNS, every=every)
            return
        for found in pager if every else pager.first_page().data:
            if found.event_id is not None:
                typer.echo(found.event_id)


@app.command("import")
def import_events(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, TSV or NDJSON (gzipped or not), or Parquet.")],
    file_format: Annotated[
        str | None,
        typer.Option("--format", help="csv, tsv, ndjson or parquet (default: suffix)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the import to finish.")] = True,
    again: Annotated[
        bool,
        typer.Option("--again", help="Import the file anew even if this upload was made before."),
    ] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Import a file of events, streamed from disk, with a progress bar (upload, then the
    job's rows); exit 1 if the job fails (`audiences jobs errors JOB` lists refused rows).
    Run again after an interrupted upload: the same file is never imported twice (--again
    does)."""
    from audiences.sdk._call import new_key

    out = Out(as_json, quiet)
    with connected(ctx) as client:
        job = upload(
            file,
            out,
            lambda uploaded: client.events.import_file(
                file,
                format=file_format,
                on_upload=uploaded,
                idempotency_key=new_key() if again else None,
            ),
        )
        if not wait:
            out.one(job, ("id", "handler", "state"))
            return
        report(follow(client, job, out), out)


@names_app.command("list")
def list_event_names(ctx: typer.Context, as_json: Json = False, quiet: Quiet = False) -> None:
    """List every event name received, with how often and when it was first and last seen."""
    with connected(ctx) as client:
        found = client.event_names.list()
    if quiet:
        for name in found:
            typer.echo(name.name)
    else:
        Out(as_json, quiet).many(found, NAME_COLUMNS)

"""``audiences profiles …`` and ``audiences evaluate``: write, read and erase profiles, and
ask which audiences one is (or would be) in."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any

import typer

from audiences.cli.context import connected
from audiences.cli.output import Json, Out, Quiet, rule_tree, stdout

app = typer.Typer(help="Profiles: get, put, delete, and their audiences.", no_args_is_help=True)
ProfileId = Annotated[str, typer.Argument(help="The profile's external id.")]
Attr = Annotated[
    list[str] | None,
    typer.Option("--attr", "-a", help="name=value (value read as JSON, else text); repeat."),
]


def attributes(pairs: list[str] | None) -> dict[str, Any]:
    """``["age=31", "plan=pro"]`` as ``{"age": 31, "plan": "pro"}``."""
    found: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not name=value", param_hint="--attr")
        try:
            found[name] = json.loads(text)
        except json.JSONDecodeError:
            found[name] = text
    return found


@app.command("get")
def get_profile(
    ctx: typer.Context, profile_id: ProfileId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Show a stored profile."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.profiles.get(profile_id))


@app.command("put")
def put_profile(
    ctx: typer.Context,
    profile_id: ProfileId,
    attr: Attr = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Create a profile or merge attributes into it (``-a plan=pro -a age=31``)."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.profiles.upsert(profile_id, attributes(attr)))


@app.command("delete")
def delete_profile(
    ctx: typer.Context, profile_id: ProfileId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Erase a profile: its data and its membership everywhere."""
    with connected(ctx) as client:
        client.profiles.delete(profile_id)
        out = Out(as_json, quiet)
        if as_json:
            out.one({"id": profile_id, "deleted": True})
        else:
            out.note(f"erased {profile_id}")


@app.command("audiences")
def profile_audiences(
    ctx: typer.Context, profile_id: ProfileId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """List the audiences a profile is in."""
    with connected(ctx) as client:
        found = client.profiles.audiences(profile_id)
        Out(as_json, quiet).many(found.audiences, ("id", "key", "name", "computed_at"))


def given_events(source: str | None) -> list[dict[str, Any]] | None:
    """The events of an NDJSON file (``-``: stdin), one ``{"event", "timestamp",
    "properties"}`` object a line, at most the API's 1,000; None without a file."""
    if source is None:
        return None
    from audiences.schemas.profiles import MAX_EVALUATE_EVENTS

    found: list[dict[str, Any]] = []
    hint = "--events"
    try:
        with contextlib.ExitStack() as stack:
            lines = sys.stdin if source == "-" else stack.enter_context(open(source, "rb"))
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                if len(found) == MAX_EVALUATE_EVENTS:
                    message = f"more than {MAX_EVALUATE_EVENTS:,} events (the API's limit)"
                    raise typer.BadParameter(message, param_hint=hint)
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    message = f"line {number} is not JSON: {exc.msg}"
                    raise typer.BadParameter(message, param_hint=hint) from None
                if not isinstance(event, dict):
                    raise typer.BadParameter(f"line {number} is not an object", param_hint=hint)
                found.append(event)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint=hint) from None
    return found


def evaluate(
    ctx: typer.Context,
    profile_id: Annotated[str | None, typer.Argument(help="A stored profile's id.")] = None,
    attr: Attr = None,
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="An NDJSON file (or - for stdin) of events to evaluate with, as if stored: "
            '{"event", "timestamp", "properties"} a line, at most 1,000.',
        ),
    ] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Which audiences a profile (stored, or given by --attr and --events) would be in now,
    and why."""
    given = given_events(events)
    if profile_id is None and not attr and given is None:
        raise typer.BadParameter("give a profile id, --attr name=value, --events, or some")
    with connected(ctx) as client:
        result = client.profiles.evaluate(profile_id, attributes=attributes(attr), events=given)
    out = Out(as_json, quiet)
    if as_json or quiet:
        out.many([verdict for verdict in result.audiences if verdict.member or as_json], ["id"])
        return
    for verdict in result.audiences:
        if verdict.explanation:
            stdout.print(rule_tree(verdict.explanation, verdict.key))
        else:
            shown = "[green]member[/]" if verdict.member else "[red]not a member[/]"
            stdout.print(f"{verdict.key} ({verdict.kind}): {shown}")

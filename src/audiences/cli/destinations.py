"""``audiences destinations …``: webhooks and file folders that receive membership changes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audiences.cli.context import connected
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet
from audiences.cli.refs import audience_id

if TYPE_CHECKING:
    from audiences.sdk import Client

app = typer.Typer(
    help="Destinations: list, get, create, update, delete, test, deliveries, delivery, "
    "redeliver, rotate-secret, reset.",
    no_args_is_help=True,
)
COLUMNS = ("id", "name", "kind", "enabled", "backlog", "last_delivery_at", "disabled_reason")
DELIVERY_COLUMNS = ("id", "type", "status", "changes", "attempts", "last_status", "last_error")
DestinationId = Annotated[str, typer.Argument(help="The destination's id.")]
FileFormat = Annotated[
    str | None, typer.Option("--format", help="File: csv (the default), ndjson or parquet.")
]
Mode = Annotated[
    str | None, typer.Option(help="File: full (every member, the default) or changes.")
]
Every = Annotated[int | None, typer.Option("--every", help="File: seconds between writes (3600).")]
Audiences = Annotated[
    list[str] | None,
    typer.Option("--audience", help="Follow this audience (key or id); repeat it."),
]
Group = Annotated[str | None, typer.Option(help="Follow the audiences of this group (its id).")]
Attributes = Annotated[
    list[str] | None,
    typer.Option("--attribute", help="Send this attribute with each change; repeat it."),
]


@app.command("list")
def list_destinations(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option(help="Search in name and description.")] = None,
    kind: Annotated[str | None, typer.Option(help="webhook or file.")] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only those on (or off).")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List destinations."""
    with connected(ctx) as client:
        found = client.destinations.list(q=q, kind=kind, enabled=enabled, limit=limit)
        pager = found.starting_at(cursor)
        show(Out(as_json, quiet), pager, COLUMNS, every=every)


@app.command("get")
def get_destination(
    ctx: typer.Context, destination_id: DestinationId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Show one destination, its backlog and last delivery."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.destinations.get(destination_id))


@app.command("create")
def create_destination(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique in the workspace.")],
    url: Annotated[str | None, typer.Option(help="A webhook: where messages are POSTed.")] = None,
    path: Annotated[
        str | None,
        typer.Option(
            help="A file destination: a folder under the server's root, or "
            "s3://<bucket>/<prefix> on the server's S3 service."
        ),
    ] = None,
    file_format: FileFormat = None,
    mode: Mode = None,
    every_seconds: Every = None,
    audience: Audiences = None,
    group: Group = None,
    attribute: Attributes = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Create a webhook (--url) or a file destination (--path) following audiences (--audience,
    repeated), a group (--group) or, with neither, every audience. A webhook's secret is
    printed this once."""
    if (url is None) == (path is None):
        raise typer.BadParameter("give exactly one of --url or --path")
    files = {"format": file_format, "mode": mode, "interval_seconds": every_seconds}
    if url is not None and any(value is not None for value in files.values()):
        raise typer.BadParameter("--format, --mode and --every are for a file destination")
    with connected(ctx) as client:
        follows = _subscription(client, audience, group, every=not audience and group is None)
        assert follows is not None  # every audience when no other is named
        options: dict[str, Any] = (
            {"kind": "webhook", "url": url}
            if url is not None
            else {
                "kind": "file",
                "path": path,
                "format": "csv" if file_format is None else file_format,
                "mode": "full" if mode is None else mode,
                "interval_seconds": 3600 if every_seconds is None else every_seconds,
            }
        )
        made = client.destinations.create(
            name=name, subscription=follows, attributes=attribute or [], **options
        )
        Out(as_json, quiet).one(made)


def _subscription(
    client: Client, audiences: list[str] | None, group: str | None, *, every: bool
) -> dict[str, Any] | None:
    """The subscription the options name: audiences (by key or id), a group, or ``every``
    audience; None when they name none. Two of them at once are refused."""
    if sum([bool(audiences), group is not None, every]) > 1:
        raise typer.BadParameter("give one of --audience (repeated), --group or --all-audiences")
    from audiences.sdk.resources.destinations import subscription  # the SDK only when used

    if audiences:
        return subscription([audience_id(client, ref) for ref in audiences])
    if group is not None:
        return subscription(group=group)
    return subscription(all_audiences=True) if every else None


@app.command("update")
def update_destination(
    ctx: typer.Context,
    destination_id: DestinationId,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    url: Annotated[str | None, typer.Option(help="A new webhook URL.")] = None,
    path: Annotated[str | None, typer.Option(help="A file destination's new path.")] = None,
    file_format: FileFormat = None,
    mode: Mode = None,
    every_seconds: Every = None,
    audience: Audiences = None,
    group: Group = None,
    every: Annotated[bool, typer.Option("--all-audiences", help="Follow every audience.")] = False,
    attribute: Attributes = None,
    no_attributes: Annotated[
        bool, typer.Option("--no-attributes", help="Send no attributes.")
    ] = False,
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Turn it on (sends what waited) or off."),
    ] = None,
    if_match: Annotated[str | None, typer.Option(help="Only if its version is this one.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Change what is given: its name, description, URL or path and file options, what it
    follows (--audience repeated, --group or --all-audiences), the attributes it sends
    (--attribute repeated, or --no-attributes), or turn it on or off."""
    if attribute and no_attributes:
        raise typer.BadParameter("give --attribute or --no-attributes, not both")
    given = {
        "name": name,
        "description": description,
        "url": url,
        "path": path,
        "format": file_format,
        "mode": mode,
        "interval_seconds": every_seconds,
        "attributes": [] if no_attributes else attribute,
        "enabled": enable,
    }
    changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    with connected(ctx) as client:
        follows = _subscription(client, audience, group, every=every)
        if follows is not None:
            changes["subscription"] = follows
        if not changes:
            raise typer.BadParameter("nothing to change: see --help for what can be")
        Out(as_json, quiet).one(
            client.destinations.update(destination_id, if_match=if_match, **changes)
        )


@app.command("delete")
def delete_destination(
    ctx: typer.Context, destination_id: DestinationId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Delete a destination and its delivery log."""
    with connected(ctx) as client:
        client.destinations.delete(destination_id)
        out = Out(as_json, quiet)
        if as_json:
            out.one({"id": destination_id, "deleted": True})
        else:
            out.note(f"deleted {destination_id}")


@app.command("test")
def test_destination(
    ctx: typer.Context, destination_id: DestinationId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Send a test message now; exit 1 when it was not delivered."""
    with connected(ctx) as client:
        result = client.destinations.test(destination_id)
        Out(as_json, quiet).one(result)
    if not result.delivered:
        raise typer.Exit(1)


@app.command("deliveries")
def list_deliveries(
    ctx: typer.Context,
    destination_id: DestinationId,
    status: Annotated[
        str | None, typer.Option(help="pending, sending, delivered or failed.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """The delivery log, newest first."""
    with connected(ctx) as client:
        pager = client.destinations.deliveries(destination_id, status=status, limit=limit)
        show(Out(as_json, quiet), pager.starting_at(cursor), DELIVERY_COLUMNS, every=every)


@app.command("delivery")
def show_delivery(
    ctx: typer.Context,
    destination_id: DestinationId,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (its webhook-id).")],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """One delivery: its status, every attempt (status, time, error) and its payload."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.destinations.delivery(destination_id, delivery_id))


@app.command("redeliver")
def redeliver(
    ctx: typer.Context,
    destination_id: DestinationId,
    delivery: Annotated[
        str | None, typer.Option(help="This delivery's id (its webhook-id).")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Every message created at or after this time (UTC).")
    ] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Send one message again (--delivery) or everything since a time (--since)."""
    if (delivery is None) == (since is None):
        raise typer.BadParameter("give exactly one of --delivery or --since")
    with connected(ctx) as client:
        found = client.destinations.redeliver(destination_id, delivery_id=delivery, since=since)
        Out(as_json, quiet).one(found)


@app.command("rotate-secret")
def rotate_secret(
    ctx: typer.Context, destination_id: DestinationId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """A new signing secret (printed this once); the old one keeps signing for the overlap."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.destinations.rotate_secret(destination_id))


@app.command("reset")
def reset(
    ctx: typer.Context, destination_id: DestinationId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Send the full lists again (as entered), then only changes."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.destinations.reset(destination_id))

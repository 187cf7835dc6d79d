"""``audiences event-properties …``: the workspace's event property schema (one type per
name across every event name)."""

from __future__ import annotations

from typing import Annotated

import typer

from audiences.cli.context import connected
from audiences.cli.output import Json, Out, Quiet
from audiences.schemas.enums import AttributeType

app = typer.Typer(help="Event properties: list, get, declare.", no_args_is_help=True)
COLUMNS = ("name", "type", "inferred", "description")


@app.command("list")
def list_event_properties(ctx: typer.Context, as_json: Json = False, quiet: Quiet = False) -> None:
    """List the workspace's event properties (--quiet: their names)."""
    with connected(ctx) as client:
        found = client.event_properties.list()
    if quiet:
        for prop in found:
            typer.echo(prop.name)
    else:
        Out(as_json, quiet).many(found, COLUMNS)


@app.command("get")
def get_event_property(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The property's name.")],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show one event property."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.event_properties.get(name))


@app.command("declare")
def declare_event_property(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The property's name (a.b for nested).")],
    type_: Annotated[AttributeType, typer.Option("--type", help="Its type.")],
    description: Annotated[str | None, typer.Option(help="What it means.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Declare an event property's type, one across every event name (a type never changes:
    exit 4)."""
    with connected(ctx) as client:
        declared = client.event_properties.declare(name, type_.value, description=description)
        Out(as_json, quiet).one(declared)

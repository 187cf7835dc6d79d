"""``audiences attributes …``: the workspace's attribute schema."""

from __future__ import annotations

from typing import Annotated

import typer

from audiences.cli.context import connected
from audiences.cli.output import Json, Out, Quiet
from audiences.schemas.enums import AttributeType

app = typer.Typer(help="Attributes: list, get, declare.", no_args_is_help=True)
COLUMNS = ("name", "type", "inferred", "description")


@app.command("list")
def list_attributes(ctx: typer.Context, as_json: Json = False, quiet: Quiet = False) -> None:
    """List the workspace's attributes (``--json`` output is a schema for ``rules check``)."""
    with connected(ctx) as client:
        found = client.attributes.list()
    out = Out(as_json, quiet)
    if quiet:
        for attribute in found:
            typer.echo(attribute.name)
    else:
        out.many(found, COLUMNS)


@app.command("get")
def get_attribute(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The attribute's name.")],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show one attribute."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.attributes.get(name))


@app.command("declare")
def declare_attribute(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The attribute's name (a.b for nested).")],
    type_: Annotated[AttributeType, typer.Option("--type", help="Its type.")],
    description: Annotated[str | None, typer.Option(help="What it means.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Declare an attribute's type (a type never changes: exit 4)."""
    with connected(ctx) as client:
        declared = client.attributes.declare(name, type_.value, description=description)
        Out(as_json, quiet).one(declared)

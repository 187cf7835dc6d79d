"""``audiences workspace …``: the key's workspace settings."""

from __future__ import annotations

from typing import Annotated

import typer

from audiences.cli.context import connected
from audiences.cli.output import Json, Out, Quiet

app = typer.Typer(help="The workspace's settings: get, set.", no_args_is_help=True)


@app.command("get")
def get_settings(ctx: typer.Context, as_json: Json = False, quiet: Quiet = False) -> None:
    """Show the workspace's settings."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.workspace.settings())


@app.command("set")
def set_settings(
    ctx: typer.Context,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict-attributes/--infer-attributes",
            help="Refuse undeclared attributes, or infer them from their first values.",
        ),
    ],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Replace the workspace's settings (admin key)."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.workspace.update_settings(strict_attributes=strict))

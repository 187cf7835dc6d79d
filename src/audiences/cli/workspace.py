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
        bool | None,
        typer.Option(
            "--strict-attributes/--infer-attributes",
            help="Refuse undeclared attributes, or infer them from their first values.",
            show_default=False,
        ),
    ] = None,
    retention: Annotated[
        int | None,
        typer.Option(
            "--event-retention-days", min=1, max=36_500, help="Drop events older than this."
        ),
    ] = None,
    forever: Annotated[
        bool, typer.Option("--keep-events-forever", help="Drop no event for its age.")
    ] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Change the workspace's settings (admin key); those not given stay as they are."""
    if strict is None and retention is None and not forever:
        raise typer.BadParameter("nothing to change: give a setting (see --help)")
    if forever and retention is not None:
        raise typer.BadParameter("--event-retention-days and --keep-events-forever disagree")
    with connected(ctx) as client:
        # PUT replaces every setting: read them first, so that one option changes one.
        current = client.workspace.settings()
        days = None if forever else retention or current.event_retention_days
        updated = client.workspace.update_settings(
            strict_attributes=current.strict_attributes if strict is None else strict,
            event_retention_days=days,
        )
        Out(as_json, quiet).one(updated)

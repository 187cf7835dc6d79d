"""``audiences groups …``: folders of audiences."""

from __future__ import annotations

from typing import Annotated

import typer

from audiences.cli.context import connected
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet

app = typer.Typer(help="Audience groups: list, get, create, update, delete.", no_args_is_help=True)
COLUMNS = ("id", "name", "description", "audience_count")
GroupId = Annotated[str, typer.Argument(help="The group's id.")]


@app.command("list")
def list_groups(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option(help="Search in name and description.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List groups."""
    with connected(ctx) as client:
        pager = client.groups.list(q=q, limit=limit).starting_at(cursor)
        show(Out(as_json, quiet), pager, COLUMNS, every=every)


@app.command("get")
def get_group(
    ctx: typer.Context, group_id: GroupId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Show one group and its audiences."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.groups.get(group_id, include="audiences"))


@app.command("create")
def create_group(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique in the workspace.")],
    description: Annotated[str | None, typer.Option(help="What it holds.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Create a group."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.groups.create(name=name, description=description))


@app.command("update")
def update_group(
    ctx: typer.Context,
    group_id: GroupId,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    if_match: Annotated[str | None, typer.Option(help="Only if its version is this one.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Rename or describe a group."""
    changes = {key: value for key, value in (("name", name), ("description", description)) if value}
    if not changes:
        raise typer.BadParameter("nothing to change: give --name or --description")
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.groups.update(group_id, if_match=if_match, **changes))


@app.command("delete")
def delete_group(
    ctx: typer.Context,
    group_id: GroupId,
    detach: Annotated[bool, typer.Option(help="Ungroup its audiences (else exit 4).")] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Delete a group."""
    with connected(ctx) as client:
        client.groups.delete(group_id, detach=detach)
        out = Out(as_json, quiet)
        if as_json:
            out.one({"id": group_id, "deleted": True})
        else:
            out.note(f"deleted {group_id}")

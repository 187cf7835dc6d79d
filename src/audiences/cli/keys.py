"""``audiences keys …``: API keys through the server (an admin key), or minted straight in the
local database with ``keys create --workspace`` (the server extra, no key needed)."""

from __future__ import annotations

from typing import Annotated

import typer

from audiences.cli import local
from audiences.cli.context import connected
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet
from audiences.schemas.enums import Role

app = typer.Typer(help="API keys: list, get, create, revoke.", no_args_is_help=True)
COLUMNS = ("id", "name", "role", "prefix", "created_at", "revoked_at")
KeyId = Annotated[str, typer.Argument(help="The key's id.")]


@app.command("create")
def create_key(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option(
            help="Mint in the local database for this workspace (created if missing), "
            "without a server; needs the server extra."
        ),
    ] = None,
    role: Annotated[Role, typer.Option(help="What the key may do.")] = Role.ADMIN,
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "cli",
    data_dir: local.DataDir = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Mint an API key. The token is printed once and never stored."""
    if workspace is not None:
        local.create_key_here(
            workspace=workspace, role=role, name=name, data_dir=data_dir, as_json=as_json
        )
        return
    with connected(ctx) as client:
        created = client.keys.create(name=name, role=role.value)
    if as_json:
        Out(as_json=True).one(created)
    else:
        typer.echo(created.token)
        Out(quiet=quiet).note(f"{role.value} key {created.id}; it will not be shown again.")


@app.command("list")
def list_keys(
    ctx: typer.Context,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List the workspace's keys (never their tokens)."""
    with connected(ctx) as client:
        pager = client.keys.list(limit=limit).starting_at(cursor)
        show(Out(as_json, quiet), pager, COLUMNS, every=every)


@app.command("get")
def get_key(ctx: typer.Context, key_id: KeyId, as_json: Json = False, quiet: Quiet = False) -> None:
    """Show one key."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.keys.get(key_id))


@app.command("revoke")
def revoke_key(
    ctx: typer.Context, key_id: KeyId, as_json: Json = False, quiet: Quiet = False
) -> None:
    """Revoke a key: it stops working at once."""
    with connected(ctx) as client:
        client.keys.revoke(key_id)
    out = Out(as_json, quiet)
    if as_json:
        out.one({"id": key_id, "revoked": True})
    else:
        out.note(f"revoked {key_id}")

"""``audiences audiences …``: list, get, create, update and delete audience definitions, and
sync external ones with their source."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from audiences.cli.context import connected
from audiences.cli.listing import All, Cursor, Limit, show
from audiences.cli.output import Json, Out, Quiet
from audiences.cli.progress import follow, report
from audiences.cli.refs import audience_id

app = typer.Typer(help="Audiences: list, get, create, update, delete, sync.", no_args_is_help=True)
COLUMNS = ("id", "key", "name", "kind", "lifecycle_state", "size", "rule")
FIELDS = (
    "id", "key", "name", "description", "kind", "rule", "ttl_days", "source", "group_id",
    "labels", "lifecycle_state", "archived", "refresh_policy", "size", "evaluation",
    "evaluation_mode", "dependencies", "dependents", "writes", "sync", "version", "created_at",
    "updated_at", "members_changed_at",
)  # fmt: skip
Ref = Annotated[str, typer.Argument(help="The audience's key or id.")]


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=name) from None


@app.command("list")
def list_audiences(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option(help="Search in name and description.")] = None,
    kind: Annotated[str | None, typer.Option(help="static, dynamic or external.")] = None,
    label: Annotated[str | None, typer.Option(help="Carrying this label.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """List audiences (newest first by creation)."""
    with connected(ctx) as client:
        pager = client.audiences.list(q=q, kind=kind, label=label, limit=limit)
        show(Out(as_json, quiet), pager.starting_at(cursor), COLUMNS, every=every)


@app.command("get")
def get_audience(ctx: typer.Context, ref: Ref, as_json: Json = False, quiet: Quiet = False) -> None:
    """Show one audience."""
    with connected(ctx) as client:
        Out(as_json, quiet).one(client.audiences.get(audience_id(client, ref)), FIELDS)


@app.command("create")
def create_audience(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="A slug unique in the workspace.")],
    name: Annotated[str, typer.Option(help="A name for people.")],
    kind: Annotated[str, typer.Option(help="static, dynamic or external.")] = "dynamic",
    rule: Annotated[str | None, typer.Option(help="Dynamic: the rule (SQL boolean).")] = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="A label; repeat for more.")] = None,
    group: Annotated[str | None, typer.Option(help="A group id.")] = None,
    ttl_days: Annotated[
        int | None, typer.Option(help="Static: members leave after N days.")
    ] = None,
    refresh: Annotated[
        str | None, typer.Option(help='A refresh policy as JSON: \'{"mode": "streaming"}\'.')
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help='External: the source as JSON: \'{"type": "sql", "query": "…"}\'.'),
    ] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Create an audience."""
    fields: dict[str, Any] = {
        "rule": rule,
        "description": description,
        "labels": label,
        "group_id": group,
        "ttl_days": ttl_days,
        "refresh_policy": _json_option(refresh, "--refresh"),
        "source": _json_option(source, "--source"),
    }
    body = {name_: value for name_, value in fields.items() if value is not None}
    with connected(ctx) as client:
        created = client.audiences.create(key=key, name=name, kind=kind, **body)
        Out(as_json, quiet).one(created, FIELDS)


@app.command("update")
def update_audience(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    rule: Annotated[str | None, typer.Option(help="A new rule.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    lifecycle: Annotated[str | None, typer.Option(help="draft, published or inactive.")] = None,
    archived: Annotated[
        bool | None, typer.Option("--archived/--unarchived", help="Archive or restore it.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="An external audience's new source, whole, as a JSON object."),
    ] = None,
    set_json: Annotated[
        str | None, typer.Option("--set", help="More fields as a JSON object (merge patch).")
    ] = None,
    if_match: Annotated[
        str | None,
        typer.Option(help="Only if its version is still this one (412, exit 4, otherwise)."),
    ] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Change some fields of an audience (a merge patch); ``--source`` replaces an external
    audience's source whole, so it may change its type."""
    changes: dict[str, Any] = {
        "name": name,
        "rule": rule,
        "description": description,
        "lifecycle_state": lifecycle,
        "archived": archived,
    }
    patch = {key: value for key, value in changes.items() if value is not None}
    patch.update(_json_option(set_json, "--set") or {})
    replacing = _json_option(source, "--source")
    if replacing is not None and not isinstance(replacing, dict):
        raise typer.BadParameter("a JSON object", param_hint="--source")
    if not patch and replacing is None:
        raise typer.BadParameter("nothing to change: give --name, --rule, --source, … or --set")
    with connected(ctx) as client:
        target = audience_id(client, ref)
        if replacing is not None:
            # A merge patch merges into the stored source: the fields the new one leaves
            # out are sent as null, so the source stored is the one given.
            current = client.audiences.get(target)
            stored = current.model_dump(mode="json").get("source") or {}
            patch["source"] = {**dict.fromkeys(stored), **replacing}
            # Sent only if nobody changed it since it was read (else 412, exit 4).
            if_match = if_match or str(current.version)
        updated = client.audiences.update(target, if_match=if_match, **patch)
        Out(as_json, quiet).one(updated, FIELDS)


@app.command("delete")
def delete_audience(
    ctx: typer.Context,
    ref: Ref,
    if_match: Annotated[str | None, typer.Option(help="Only if its version is this one.")] = None,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Delete an audience (refused, exit 4, while other audiences' rules read it)."""
    with connected(ctx) as client:
        target = audience_id(client, ref)
        client.audiences.delete(target, if_match=if_match)
        out = Out(as_json, quiet)
        if as_json:
            out.one({"id": target, "deleted": True})
        else:
            out.note(f"deleted {target}")


@app.command("sync")
def sync_audience(
    ctx: typer.Context,
    ref: Ref,
    wait: Annotated[bool, typer.Option(help="Wait for the sync to finish.")] = False,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Sync an external audience with its file or SQL source now: its job; --wait follows it
    and exits 1 when the sync fails (the members stay as they were)."""
    out = Out(as_json, quiet)
    with connected(ctx) as client:
        job = client.audiences.sync(audience_id(client, ref))
        if not wait:
            out.one(job, ("id", "handler", "state"))
            return
        report(follow(client, job, out), out)

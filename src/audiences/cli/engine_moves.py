"""``audiences engines move``: copy workspaces from one profile engine to another, in this
process (like ``serve``; it imports the server lazily).

It reads the metadata database for the workspaces (``--workspace``, or every one), opens both
engines as ``AUDIENCES_PROFILE_ENGINE`` would, and runs ``services.engine_moves`` per
workspace with a progress bar. A cut move is resumed by running the same command again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audiences.cli.local import DataDir, reported_errors, require_server
from audiences.cli.output import Json

if TYPE_CHECKING:
    from audiences.config import Settings
    from audiences.engines.base import ProfileEngine
    from audiences.services.engine_moves import MoveState

app = typer.Typer(help="Profile engines: move workspaces between them.", no_args_is_help=True)

KINDS = ("duckdb", "postgres", "clickhouse")
"""The engines a workspace can be moved out of and into (each implements ``Portable``)."""


@app.command()
def move(
    to: Annotated[str, typer.Option("--to", help=f"Target engine: {', '.join(KINDS)}.")],
    source_kind: Annotated[
        str | None,
        typer.Option("--from", help="Source engine (default AUDIENCES_PROFILE_ENGINE)."),
    ] = None,
    from_url: Annotated[
        str | None,
        typer.Option(help="Source engine URL (PostgreSQL) or folder (DuckDB); default as set."),
    ] = None,
    from_schema: Annotated[
        str | None, typer.Option(help="Source PostgreSQL schema (default as set).")
    ] = None,
    to_url: Annotated[
        str | None,
        typer.Option(
            help="Target engine URL (PostgreSQL: default the metadata database's; ClickHouse: "
            "http(s)://… or chdb:<folder>) or folder (DuckDB)."
        ),
    ] = None,
    to_schema: Annotated[
        str | None, typer.Option(help="Target PostgreSQL schema (default audiences_profiles).")
    ] = None,
    workspace: Annotated[
        str | None, typer.Option(help="The workspace's slug (default: every workspace).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Profiles or events per batch.")
    ] = 5_000,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoint folder (default <data-dir>/moves).", show_default=False),
    ] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Copy workspaces' profiles (pids kept) and events from one engine to another, resumably.

    Stop writes first (docs/deploy.md). Memberships stay in the metadata database and need no
    copy. Run the same command again to resume a cut move; a finished one is only checked.
    """
    require_server("engines move", ("sqlalchemy", "duckdb", "pyroaring"))
    from audiences.config import Settings
    from audiences.engines.factory import open_engine
    from audiences.services import engine_moves
    from audiences.store.db import make_engine, make_session_factory

    base = Settings(data_dir=data_dir) if data_dir else Settings()
    source_settings = _engine_settings(
        base, source_kind or base.profile_engine, from_url, from_schema
    )
    target_settings = _engine_settings(base, to, to_url, to_schema)
    route = f"{_where(source_settings)} -> {_where(target_settings)}"
    if _where(source_settings) == _where(target_settings):
        typer.echo("error: the source and the target are the same engine", err=True)
        raise typer.Exit(2)
    folder = engine_moves.Checkpoints(checkpoints or base.data_dir / "moves")
    metadata = make_engine(base.metadata_url)
    reports: list[dict[str, Any]] = []
    with reported_errors():
        try:
            with make_session_factory(metadata)() as session:
                ids = engine_moves.workspace_ids(session, workspace)
        finally:
            metadata.dispose()
        source = open_engine(source_settings)
        try:
            target = open_engine(target_settings)
            try:
                for workspace_id in ids:
                    state = _move_one(
                        source, target, workspace_id, route, folder, batch_size, as_json
                    )
                    reports.append(_report(state))
            finally:
                target.close()
        finally:
            source.close()
    if as_json:
        typer.echo(json.dumps({"route": route, "workspaces": reports}))
    else:
        for report in reports:
            typer.echo(
                f"{report['workspace_id']}: {report['profiles']:,} profiles, "
                f"{report['events']:,} events moved and checked "
                f"({report['sampled']} sampled{', resumed' if report['resumed'] else ''})"
            )
        typer.echo(f"{len(reports)} workspace(s) moved: {route}", err=True)


def _move_one(
    source: ProfileEngine,
    target: ProfileEngine,
    workspace_id: str,
    route: str,
    folder: Any,
    batch_size: int,
    quiet: bool,
) -> MoveState:
    from audiences.cli.progress import bar
    from audiences.services import engine_moves

    with bar() as progress:
        profiles = progress.add_task(f"{workspace_id} profiles", total=None, visible=not quiet)
        events = progress.add_task(f"{workspace_id} events", total=None, visible=not quiet)

        def show(state: MoveState) -> None:
            progress.update(profiles, completed=state.profiles_moved, total=state.profiles_total)
            progress.update(events, completed=state.events_moved, total=state.events_total)

        return engine_moves.move_workspace(
            source,
            target,
            workspace_id,
            route=route,
            checkpoints=folder,
            batch_size=batch_size,
            on_progress=show,
        )


def _engine_settings(base: Settings, kind: str, url: str | None, schema: str | None) -> Settings:
    """The settings that open engine ``kind`` at ``url`` (a folder for DuckDB); without one,
    the configured engine's when it is of that kind, else the engine's default."""
    if kind not in KINDS:
        typer.echo(
            f"error: engine {kind!r} cannot move workspaces: use {', '.join(KINDS)}", err=True
        )
        raise typer.Exit(2)
    configured = base.profile_engine == kind
    update: dict[str, Any] = {"profile_engine": kind}
    if kind == "duckdb":
        if url:
            update["data_dir"] = Path(url)
    else:
        update["profile_engine_url"] = url or (base.profile_engine_url if configured else None)
        if kind == "postgres":
            update["profile_engine_schema"] = schema or base.profile_engine_schema
    return base.model_copy(update=update)


def _where(settings: Settings) -> str:
    """An engine's kind and place, without credentials: what a checkpoint's route names."""
    if settings.profile_engine == "duckdb":
        return f"duckdb {Path(settings.data_dir).resolve()}"
    if settings.profile_engine == "clickhouse":
        url = (
            settings.profile_engine_url
            or f"chdb:{Path(settings.data_dir).resolve() / 'clickhouse'}"
        )
        return f"clickhouse {re.sub(r'//[^@/]*@', '//', url)}"
    from audiences.engines.factory import postgres_url

    with reported_errors():
        url = re.sub(r"//[^@/]*@", "//", postgres_url(settings))
    return f"postgres {url} {settings.profile_engine_schema}"


def _report(state: MoveState) -> dict[str, Any]:
    return {
        "workspace_id": state.workspace_id,
        "profiles": state.profiles_moved,
        "events": state.events_moved,
        "sampled": state.sampled,
        "resumed": state.resumed,
    }

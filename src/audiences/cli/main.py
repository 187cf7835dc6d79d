"""Typer commands. Each builds the settings once and calls the service layer (or the server)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from audiences.cli import demo
from audiences.config import Settings
from audiences.errors import AudiencesError
from audiences.kit.files import PRIVATE_UMASK
from audiences.kit.heap import freeze_startup_objects
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.services import api_keys, workspaces
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate

app = typer.Typer(
    help="Audiences: an open, self-hostable audience engine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (env AUDIENCES_DATA_DIR).", show_default=False),
]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (env AUDIENCES_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env AUDIENCES_PORT).")] = None,
    data_dir: DataDir = None,
    demo_data: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Seed a demo workspace and print its key.")
    ] = False,
    demo_profiles: Annotated[
        int, typer.Option(min=0, max=10_000_000, help="Profiles in the demo workspace.")
    ] = demo.PROFILES,
) -> None:
    """Run the API server on the embedded default (SQLite metadata in the data folder)."""
    import uvicorn

    from audiences.api.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir)
    with reported_errors():
        application = create_app(settings)
    if demo_data:
        token = demo.seed(
            application.state.session_factory,
            runtime=application.state.runtime,
            data_dir=settings.data_dir,
            profile_count=demo_profiles,
        )
        _announce(settings, token)
    freeze_startup_objects()
    # uvloop and httptools (uvicorn[standard]) where the platform has them.
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="auto",
        http="auto",
    )


def _announce(settings: Settings, token: str) -> None:
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        f"Audiences demo workspace ready at {base}",
        f"  API docs:  {base}/docs",
        f"  API key:   {token}   (admin, workspace 'demo')",
        f'  Try:       curl -H "Authorization: Bearer {token}" {base}/v1/audiences',
    ]
    typer.echo("\n".join(lines), err=True)


@app.command()
def worker(
    data_dir: DataDir = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker threads (env AUDIENCES_WORKER_THREADS)."),
    ] = None,
) -> None:
    """Run job workers against the metadata database until SIGINT or SIGTERM.

    Start any number of these processes beside the API servers (PostgreSQL in production).
    """
    import logging

    from audiences.jobs.worker import run_workers

    settings = _settings(data_dir=data_dir)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with reported_errors():
        run_workers(settings, threads=threads or max(settings.worker_threads, 1))


@keys_app.command("create")
def create_key(
    workspace: Annotated[str, typer.Option(help="Workspace slug; created if it does not exist.")],
    role: Annotated[Role, typer.Option(help="What the key may do.")] = Role.ADMIN,
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "cli",
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mint an API key. The token is printed once and never stored."""
    settings = _settings(data_dir=data_dir)
    engine = make_engine(settings.metadata_url)
    migrate(engine)
    with reported_errors(), make_session_factory(engine).begin() as session:
        ws = workspaces.ensure(session, slug=workspace)
        row, token = api_keys.create(
            session, workspace=ws, data=ApiKeyCreate(name=name, role=role), actor="cli"
        )
        shown = api_keys.to_model(row, ws.slug).model_dump(mode="json")
    engine.dispose()
    if as_json:
        typer.echo(json.dumps({**shown, "token": token}))
    else:
        typer.echo(token)
        console.print(
            f"{role.value} key {row.id} for workspace {workspace!r}; it will not be shown again."
        )


@contextmanager
def reported_errors() -> Iterator[None]:
    """Print an :class:`AudiencesError` as one line and exit 1, instead of a traceback."""
    try:
        yield
    except AudiencesError as exc:
        typer.echo(f"error: {exc.detail} ({exc.code})", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    """Entry point of the ``audiences`` console script. Every file it creates (metadata and
    profile databases, uploads, logs of writes) is readable by its owner only."""
    os.umask(PRIVATE_UMASK)
    app()

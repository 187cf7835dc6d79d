"""Commands that run the server's own code here: ``serve``, ``worker`` and ``keys create
--workspace``. They import the server lazily, inside the command, so that the client commands
work on an install without the ``server`` extra; without it these say what to install and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audiences.cli import demo_profiles
from audiences.schemas.enums import Role

if TYPE_CHECKING:
    from audiences.config import Settings

SERVER_MODULES = ("fastapi", "sqlalchemy", "duckdb", "pyroaring", "sqlglot", "uvicorn")
INSTALL_HINT = "pip install 'audiences[server]'"

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (env AUDIENCES_DATA_DIR).", show_default=False),
]


def require_server(command: str, modules: tuple[str, ...] = SERVER_MODULES) -> None:
    """Exit 1 with one line naming the extra to install when the server's packages (or the
    ``modules`` the command needs of them) are missing."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        typer.echo(
            f"error: `audiences {command}` runs the server, which needs its extra "
            f"(missing {', '.join(missing)}): {INSTALL_HINT}",
            err=True,
        )
        raise typer.Exit(1)


def _settings(**overrides: Any) -> Settings:
    from audiences.config import Settings

    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (env AUDIENCES_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env AUDIENCES_PORT).")] = None,
    data_dir: DataDir = None,
    demo_data: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Seed a demo workspace and print its key.")
    ] = False,
    demo_profiles: Annotated[
        int, typer.Option(min=0, max=10_000_000, help="Profiles in the demo workspace.")
    ] = demo_profiles.COUNT,
) -> None:
    """Run the API server on the embedded default (SQLite metadata in the data folder)."""
    require_server("serve")
    import uvicorn

    from audiences.api.app import create_app
    from audiences.cli import demo
    from audiences.kit.heap import freeze_startup_objects
    from audiences.kit.threads import shorten_thread_switches

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
    shorten_thread_switches()
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
        f"  Or:        AUDIENCES_URL={base} AUDIENCES_API_KEY={token} audiences audiences list",
    ]
    typer.echo("\n".join(lines), err=True)


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
    require_server("worker")
    import logging

    from audiences.jobs.worker import run_workers
    from audiences.kit.threads import shorten_thread_switches

    settings = _settings(data_dir=data_dir)
    shorten_thread_switches()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with reported_errors():
        run_workers(settings, threads=threads or max(settings.worker_threads, 1))


def create_key_here(
    *, workspace: str, role: Role, name: str, data_dir: Path | None, as_json: bool
) -> None:
    """Mint a key straight in the metadata database (``keys create --workspace``)."""
    require_server("keys create --workspace")
    from audiences.schemas.api_keys import ApiKeyCreate
    from audiences.services import api_keys, workspaces
    from audiences.store.db import make_engine, make_session_factory
    from audiences.store.migrate import migrate

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
        typer.echo(
            f"{role.value} key {row.id} for workspace {workspace!r}; it will not be shown again.",
            err=True,
        )


@contextmanager
def reported_errors() -> Iterator[None]:
    """Print a server-side :class:`AudiencesError` as one line and exit 1, not a traceback."""
    from audiences.errors import AudiencesError

    try:
        yield
    except AudiencesError as exc:
        typer.echo(f"error: {exc.detail} ({exc.code})", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``worker`` to the top-level app."""
    app.command()(serve)
    app.command()(worker)

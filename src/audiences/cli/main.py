"""The ``audiences`` command line: the app, its global options, and every command group.

Remote commands talk to a server through the SDK (light imports only); ``serve``, ``worker``
and ``keys create --workspace`` run the server's code in this process and import it lazily,
so a client install (no ``server`` extra) runs everything else.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from audiences.cli import (
    attributes,
    audiences,
    destinations,
    engine_moves,
    event_properties,
    events,
    groups,
    jobs,
    keys,
    local,
    members,
    profiles,
    rules,
    workspace,
)
from audiences.cli.context import Remote
from audiences.kit.files import PRIVATE_UMASK

app = typer.Typer(
    help="Audiences: an open, self-hostable audience engine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="AUDIENCES_URL", help="The server, e.g. http://127.0.0.1:8000."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="AUDIENCES_API_KEY", help="An API key (aud_…).", show_default=False),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            envvar="AUDIENCES_PROFILE",
            help="A named profile of ~/.config/audiences/config.toml (default: 'default').",
        ),
    ] = None,
) -> None:
    """Where remote commands send their requests: options, then environment, then the config
    file's profile."""
    ctx.obj = Remote(url=url, key=key, profile=profile)


local.register(app)
members.register(app)
app.add_typer(audiences.app, name="audiences")
app.add_typer(groups.app, name="groups")
app.add_typer(destinations.app, name="destinations")
app.add_typer(profiles.app, name="profiles")
app.add_typer(attributes.app, name="attributes")
app.add_typer(events.app, name="events")
app.add_typer(event_properties.app, name="event-properties")
app.add_typer(events.names_app, name="event-names")
app.add_typer(jobs.app, name="jobs")
app.add_typer(engine_moves.app, name="engines")
app.add_typer(keys.app, name="keys")
app.add_typer(workspace.app, name="workspace")
app.add_typer(rules.app, name="rules")


def main() -> None:
    """Entry point of the ``audiences`` console script."""
    os.umask(PRIVATE_UMASK)
    app()

"""What every remote command shares: which server and key (options, environment, config file),
the SDK client, and how failures become one line on stderr and a documented exit code.

Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict or precondition failed,
5 server unavailable, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from audiences import errors

if TYPE_CHECKING:
    from audiences.sdk import Client

OK, FAILURE, USAGE, NOT_FOUND, CONFLICT, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_CODES: tuple[tuple[type[errors.AudiencesError], int], ...] = (
    (errors.NotFound, NOT_FOUND),
    (errors.Conflict, CONFLICT),
    (errors.PreconditionFailed, CONFLICT),
    (errors.PreconditionRequired, CONFLICT),
    (errors.ServiceUnavailable, UNAVAILABLE),
)
"""The exit code of an error by its class (first match); the SDK's ``Unreachable`` exits 5
too, and any other error 1."""
HINTS: dict[int, str] = {
    401: "check the key: --key, AUDIENCES_API_KEY or the config file's profile",
    403: "this key's role does not allow it; use a write or admin key",
    404: "check the id or key (`audiences audiences list` shows them)",
    409: "the resource is in a state that refuses this; `get` it to see why",
    412: "it changed since you read it: get it again, then retry",
    422: "fix the fields named above",
    429: "too many requests; wait and retry",
}


def config_path() -> Path:
    """``$AUDIENCES_CONFIG``, else ``$XDG_CONFIG_HOME/audiences/config.toml`` (``~/.config``)."""
    named = os.environ.get("AUDIENCES_CONFIG")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "audiences" / "config.toml"


@dataclass
class Remote:
    """The server and key a command talks to, as given; resolved by :meth:`client`."""

    url: str | None = None
    key: str | None = None
    profile: str | None = None

    def resolved(self) -> tuple[str | None, str | None]:
        """URL and key: options and environment first, then the config file's profile."""
        found = self._profile()
        return self.url or found.get("url"), self.key or found.get("key")

    def _profile(self) -> dict[str, str]:
        path = config_path()
        name = self.profile or "default"
        if not path.exists():
            if self.profile:
                fail(f"no config file at {path} for profile {name!r}", USAGE)
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            fail(f"cannot read {path}: {exc}", USAGE)
        profiles: dict[str, Any] = data.get("profiles", {})
        if name not in profiles:
            if self.profile:
                fail(f"no profile {name!r} in {path} (has: {', '.join(profiles) or 'none'})", USAGE)
            return {}
        return {key: str(value) for key, value in profiles[name].items()}

    def client(self) -> Client:
        """An SDK client for the resolved server and key."""
        from audiences.sdk import Client

        url, key = self.resolved()
        return Client(url, key=key)


def remote(ctx: typer.Context) -> Remote:
    """The :class:`Remote` the top-level options made (a plain one under tests' sub-apps)."""
    found = ctx.find_object(Remote)
    return found if found is not None else Remote()


def fail(message: str, code: int = FAILURE, hint: str | None = None) -> NoReturn:
    """Print ``error: message`` (and a hint) on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def _hint(status: int, running: typer.Context | None) -> str | None:
    """The hint for an error's status; a 404 names the list of the ``running`` command's own
    group (``audiences destinations get`` -> ``audiences destinations list``)."""
    group = running.parent if running is not None else None
    if status == 404 and group is not None and group.parent is not None:
        finding = getattr(group.command, "get_command", None)  # a group: its commands
        if finding is not None and finding(group, "list") is not None:
            return f"check the id or key (`audiences {group.info_name} list` shows them)"
        return "check the id or key"
    return HINTS.get(status)


def exit_code(error: errors.AudiencesError) -> int:
    """The documented exit code of ``error``."""
    if error.code == "unreachable":  # the SDK's Unreachable (not imported until it is used)
        return UNAVAILABLE
    return next((code for cls, code in EXIT_CODES if isinstance(error, cls)), FAILURE)


@contextmanager
def handled(client: Client | None = None, running: typer.Context | None = None) -> Iterator[None]:
    """Turn SDK errors, unreadable files and Ctrl-C into one line and an exit code (and a
    hint, which for a 404 names the ``running`` command's list)."""
    # The SDK is imported by the command using it, not with the command line (start-up time).
    from audiences.sdk import ApiError, Unreachable

    try:
        yield
    except ApiError as exc:
        for item in exc.errors:
            place = ".".join(str(part) for part in item.location) or "?"
            where = f" at {item.line}:{item.col}" if item.line is not None else ""
            suggestion = f" ({item.suggestion})" if item.suggestion else ""
            typer.echo(f"  {place}{where}: {item.message} [{item.code}]{suggestion}", err=True)
        fail(
            f"{exc.detail} ({exc.code}; request {exc.request_id})",
            exit_code(exc),
            _hint(exc.http_status, running),
        )
    except Unreachable as exc:
        url = client.http_client.base_url if client is not None else "the server"
        fail(
            f"no answer from {url}: {exc.detail} ({exc.code})",
            UNAVAILABLE,
            "is the server running? check --url, AUDIENCES_URL or the config file's profile",
        )
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), FAILURE)
    except KeyboardInterrupt:
        fail("interrupted; what the server accepted before goes on", INTERRUPTED)
    finally:
        if client is not None:
            client.close()


@contextmanager
def connected(ctx: typer.Context) -> Iterator[Client]:
    """An SDK client for the command, closed at the end, its errors :func:`handled`."""
    client = remote(ctx).client()
    with handled(client, ctx):
        yield client

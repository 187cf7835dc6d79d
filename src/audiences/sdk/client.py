"""``Client`` and ``AsyncClient``: the server's address and key, the httpx client they talk
through (the transport seam), the retry policy, and one attribute per resource."""

from __future__ import annotations

import os
from importlib import import_module
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar, overload

import httpx

from audiences.sdk._http import AsyncHttp, Retry, SyncHttp, client_options

if TYPE_CHECKING:
    from audiences.sdk.resources.attributes import AsyncAttributes, Attributes
    from audiences.sdk.resources.audiences import AsyncAudiences, Audiences
    from audiences.sdk.resources.destinations import AsyncDestinations, Destinations
    from audiences.sdk.resources.event_properties import AsyncEventProperties, EventProperties
    from audiences.sdk.resources.events import AsyncEventNames, AsyncEvents, EventNames, Events
    from audiences.sdk.resources.groups import AsyncGroups, Groups
    from audiences.sdk.resources.imports import AsyncImports, Imports
    from audiences.sdk.resources.jobs import AsyncJobs, Jobs
    from audiences.sdk.resources.keys import AsyncKeys, Keys
    from audiences.sdk.resources.profiles import AsyncProfiles, Profiles
    from audiences.sdk.resources.workspace import AsyncWorkspace, Workspace

R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8000"


def _url(url: str | None) -> str:
    return url or os.environ.get("AUDIENCES_URL") or DEFAULT_URL


def _key(key: str | None) -> str | None:
    return key or os.environ.get("AUDIENCES_API_KEY")


class _Resource(Generic[R]):
    """A client's resource, made on first use: its module (and the wire models it reads) is
    imported then, so a program or a command using two resources loads only those two."""

    def __init__(self, module: str, name: str) -> None:
        self.module = f"audiences.sdk.resources.{module}"
        self.name = name
        self.attribute = name

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...

    @overload
    def __get__(self, client: object, owner: type) -> R: ...

    def __get__(self, client: object, owner: type) -> Self | R:
        if client is None:
            return self
        made: R = getattr(import_module(self.module), self.name)(client._http)  # type: ignore[attr-defined]
        client.__dict__[self.attribute] = made  # found first from now on (no __set__ here)
        return made


class Client:
    """A synchronous client. ``url`` and ``key`` default to ``AUDIENCES_URL`` and
    ``AUDIENCES_API_KEY``; ``transport`` replaces the network (``httpx.ASGITransport(app)``
    wrapped for sync use, ``httpx.MockTransport``, …); ``http_client`` replaces the whole httpx
    client. Use it as a context manager, or call :meth:`close`.

    >>> client = Client("http://127.0.0.1:8000", key="aud_example")
    >>> client.audiences.get  # doctest: +ELLIPSIS
    <bound method ...>
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key: str | None = None,
        retry: Retry | None = None,
        timeout: httpx.Timeout | float | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        options = client_options(_url(url), _key(key), timeout)
        self.http_client = http_client or httpx.Client(transport=transport, **options)
        self._http = SyncHttp(self.http_client, retry or Retry())

    audiences: _Resource[Audiences] = _Resource("audiences", "Audiences")
    groups: _Resource[Groups] = _Resource("groups", "Groups")
    destinations: _Resource[Destinations] = _Resource("destinations", "Destinations")
    profiles: _Resource[Profiles] = _Resource("profiles", "Profiles")
    attributes: _Resource[Attributes] = _Resource("attributes", "Attributes")
    events: _Resource[Events] = _Resource("events", "Events")
    event_properties: _Resource[EventProperties] = _Resource("event_properties", "EventProperties")
    event_names: _Resource[EventNames] = _Resource("events", "EventNames")
    imports: _Resource[Imports] = _Resource("imports", "Imports")
    jobs: _Resource[Jobs] = _Resource("jobs", "Jobs")
    keys: _Resource[Keys] = _Resource("keys", "Keys")
    workspace: _Resource[Workspace] = _Resource("workspace", "Workspace")

    def close(self) -> None:
        """Close the connections."""
        self.http_client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """An asyncio client with the same resources as :class:`Client`, each call awaited and each
    list an ``async for``. ``transport`` takes ``httpx.ASGITransport(app)`` to call an app in
    process."""

    def __init__(
        self,
        url: str | None = None,
        *,
        key: str | None = None,
        retry: Retry | None = None,
        timeout: httpx.Timeout | float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        options = client_options(_url(url), _key(key), timeout)
        self.http_client = http_client or httpx.AsyncClient(transport=transport, **options)
        self._http = AsyncHttp(self.http_client, retry or Retry())

    audiences: _Resource[AsyncAudiences] = _Resource("audiences", "AsyncAudiences")
    groups: _Resource[AsyncGroups] = _Resource("groups", "AsyncGroups")
    destinations: _Resource[AsyncDestinations] = _Resource("destinations", "AsyncDestinations")
    profiles: _Resource[AsyncProfiles] = _Resource("profiles", "AsyncProfiles")
    attributes: _Resource[AsyncAttributes] = _Resource("attributes", "AsyncAttributes")
    events: _Resource[AsyncEvents] = _Resource("events", "AsyncEvents")
    event_properties: _Resource[AsyncEventProperties] = _Resource(
        "event_properties", "AsyncEventProperties"
    )
    event_names: _Resource[AsyncEventNames] = _Resource("events", "AsyncEventNames")
    imports: _Resource[AsyncImports] = _Resource("imports", "AsyncImports")
    jobs: _Resource[AsyncJobs] = _Resource("jobs", "AsyncJobs")
    keys: _Resource[AsyncKeys] = _Resource("keys", "AsyncKeys")
    workspace: _Resource[AsyncWorkspace] = _Resource("workspace", "AsyncWorkspace")

    async def close(self) -> None:
        """Close the connections."""
        await self.http_client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

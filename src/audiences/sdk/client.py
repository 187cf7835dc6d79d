"""``Client`` and ``AsyncClient``: the server's address and key, the httpx client they talk
through (the transport seam), the retry policy, and one attribute per resource."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

import httpx

from audiences.sdk._http import AsyncHttp, Retry, SyncHttp, client_options
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

DEFAULT_URL = "http://127.0.0.1:8000"


def _url(url: str | None) -> str:
    return url or os.environ.get("AUDIENCES_URL") or DEFAULT_URL


def _key(key: str | None) -> str | None:
    return key or os.environ.get("AUDIENCES_API_KEY")


class Client:
    """A synchronous client. ``url`` and ``key`` default to ``AUDIENCES_URL`` and
    ``AUDIENCES_API_KEY``; ``transport`` replaces the network (``httpx.ASGITransport(app)``
    wrapped for sync use, ``httpx.MockTransport``, …); ``http_client`` replaces the whole httpx
    client. Use it as a context manager, or call :meth:`close`.

    >>> client = Client("http://127.0.0.1:8000", key="aud_…")
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
        http = SyncHttp(self.http_client, retry or Retry())
        self.audiences = Audiences(http)
        self.groups = Groups(http)
        self.destinations = Destinations(http)
        self.profiles = Profiles(http)
        self.attributes = Attributes(http)
        self.events = Events(http)
        self.event_properties = EventProperties(http)
        self.event_names = EventNames(http)
        self.imports = Imports(http)
        self.jobs = Jobs(http)
        self.keys = Keys(http)
        self.workspace = Workspace(http)

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
        http = AsyncHttp(self.http_client, retry or Retry())
        self.audiences = AsyncAudiences(http)
        self.groups = AsyncGroups(http)
        self.destinations = AsyncDestinations(http)
        self.profiles = AsyncProfiles(http)
        self.attributes = AsyncAttributes(http)
        self.events = AsyncEvents(http)
        self.event_properties = AsyncEventProperties(http)
        self.event_names = AsyncEventNames(http)
        self.imports = AsyncImports(http)
        self.jobs = AsyncJobs(http)
        self.keys = AsyncKeys(http)
        self.workspace = AsyncWorkspace(http)

    async def close(self) -> None:
        """Close the connections."""
        await self.http_client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

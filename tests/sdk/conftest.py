"""SDK clients on the real app in process, through the transport seam: ``httpx.ASGITransport``
for the async client, and for the sync one the same transport driven by the tenant's event
loop (an anyio blocking portal), since httpx ships no sync transport for ASGI apps."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.sdk import Client, Retry
from tests.factories import Tenant


class PortalTransport(httpx.BaseTransport):
    """A sync httpx transport that hands each request to ``httpx.ASGITransport`` on the
    tenant client's event loop."""

    def __init__(self, tenant_client: object, app: FastAPI) -> None:
        self.portal = tenant_client.portal  # type: ignore[attr-defined]
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self.inner.handle_async_request(forwarded)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self.portal.call(send)


def sdk_client(app: FastAPI, tenant: Tenant, role: Role = Role.ADMIN) -> Client:
    """A sync SDK client for ``tenant`` with the key of ``role``, on the app in process."""
    transport = PortalTransport(tenant.admin, app)
    return Client(
        "http://testserver", key=tenant.tokens[role], transport=transport, retry=Retry.none()
    )


@pytest.fixture
def client(app: FastAPI, tenant: Tenant) -> Iterator[Client]:
    """A sync SDK client with the tenant's admin key."""
    with sdk_client(app, tenant) as made:
        yield made

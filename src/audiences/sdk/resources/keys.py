"""``/v1/api-keys``: mint, list and revoke the workspace's keys (admin role)."""

from __future__ import annotations

from audiences.schemas.api_keys import ApiKey, ApiKeyCreated
from audiences.schemas.common import Page
from audiences.sdk._call import Call, clean, created, endpoint, model, nothing
from audiences.sdk._resource import (
    AsyncResource,
    SyncResource,
    pages,
    pages_async,
    sends,
    sends_async,
)

PATH = "/v1/api-keys"


class Calls:
    """The requests of the API key resource."""

    @staticmethod
    def list(
        *, role: str | list[str] | None = None, sort: str | None = None, limit: int | None = None
    ) -> Call[Page[ApiKey]]:
        """Every key (never their tokens)."""
        params = clean({"role": role, "sort": sort, "limit": limit})
        return Call("GET", PATH, model(Page[ApiKey]), params=params)

    @staticmethod
    def get(key_id: str) -> Call[ApiKey]:
        """One key."""
        return Call("GET", endpoint(PATH + "/{}", key_id), model(ApiKey))

    @staticmethod
    def create(*, name: str, role: str) -> Call[ApiKeyCreated]:
        """A new key; its ``token`` is in this answer only."""
        return created(PATH, model(ApiKeyCreated), {"name": name, "role": role})

    @staticmethod
    def revoke(key_id: str) -> Call[None]:
        """Revoke it: it stops working at once."""
        return Call("DELETE", endpoint(PATH + "/{}", key_id), nothing)


class Keys(SyncResource):
    """API keys: ``client.keys``."""

    list = pages(Calls.list, ApiKey)
    get = sends(Calls.get)
    create = sends(Calls.create)
    revoke = sends(Calls.revoke)


class AsyncKeys(AsyncResource):
    """API keys: ``client.keys`` of an :class:`AsyncClient`."""

    list = pages_async(Calls.list, ApiKey)
    get = sends_async(Calls.get)
    create = sends_async(Calls.create)
    revoke = sends_async(Calls.revoke)

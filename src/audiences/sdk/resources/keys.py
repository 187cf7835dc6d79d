"""``/v1/api-keys``: mint, list and revoke the workspace's keys (admin role)."""

from __future__ import annotations

from audiences.schemas.api_keys import ApiKey, ApiKeyCreated
from audiences.schemas.common import Page
from audiences.sdk._call import (
    Call,
    Fields,
    clean,
    created,
    endpoint,
    model,
    nothing,
    reading,
    reading_page,
)
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
        *,
        role: str | list[str] | None = None,
        sort: str | None = None,
        fields: Fields = None,
        limit: int | None = None,
    ) -> Call[Page[ApiKey]]:
        """Every key (never their tokens)."""
        params = clean({"role": role, "sort": sort, "fields": fields, "limit": limit})
        return Call("GET", PATH, reading_page(ApiKey, fields), params=params)

    @staticmethod
    def get(key_id: str, *, fields: Fields = None) -> Call[ApiKey]:
        """One key (``fields``: only these)."""
        params = clean({"fields": fields})
        return Call("GET", endpoint(PATH + "/{}", key_id), reading(ApiKey, fields), params=params)

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

"""``/v1/audience-groups``: folders of audiences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audiences.schemas.common import Page
from audiences.schemas.groups import Group
from audiences.sdk._call import (
    Call,
    Fields,
    clean,
    created,
    endpoint,
    json_patch,
    merge_patch,
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
from audiences.sdk.resources._targets import Target, match_headers, precondition, target_id

PATH = "/v1/audience-groups"


class Calls:
    """The requests of the group resource."""

    @staticmethod
    def list(
        *,
        q: str | None = None,
        name: str | None = None,
        sort: str | None = None,
        include: str | None = None,
        fields: Fields = None,
        limit: int | None = None,
    ) -> Call[Page[Group]]:
        """Every group matching the filters (``include="audiences"`` embeds theirs)."""
        params = clean({"q": q, "name": name, "sort": sort, "include": include, "limit": limit})
        params |= clean({"fields": fields})
        return Call("GET", PATH, reading_page(Group, fields), params=params)

    @staticmethod
    def get(group: Target, *, include: str | None = None, fields: Fields = None) -> Call[Group]:
        """One group (``fields``: only these)."""
        params = clean({"include": include, "fields": fields})
        path = endpoint(PATH + "/{}", target_id(group))
        return Call("GET", path, reading(Group, fields), params=params)

    @staticmethod
    def create(*, name: str, description: str | None = None) -> Call[Group]:
        """A new group (one ``Idempotency-Key`` across retries)."""
        return created(PATH, model(Group), {"name": name, "description": description})

    @staticmethod
    def update(
        group: Target, *, if_match: bool | int | str | None = None, **changes: Any
    ) -> Call[Group]:
        """Change its name or description (merge patch; ``if_match`` as for audiences)."""
        tag = precondition(group, if_match)
        return merge_patch(endpoint(PATH + "/{}", target_id(group)), model(Group), changes, tag)

    @staticmethod
    def patch(
        group: Target,
        operations: Sequence[Mapping[str, Any]],
        *,
        if_match: bool | int | str | None = None,
    ) -> Call[Group]:
        """Edit with a JSON Patch (RFC 6902), applied whole or not at all."""
        path = endpoint(PATH + "/{}", target_id(group))
        return json_patch(path, model(Group), operations, precondition(group, if_match))

    @staticmethod
    def delete(
        group: Target, *, detach: bool = False, if_match: bool | int | str | None = None
    ) -> Call[None]:
        """Delete it; ``detach=True`` ungroups its audiences (else 409 while it holds some)."""
        headers = match_headers(group, if_match)
        params = clean({"detach": detach or None})
        path = endpoint(PATH + "/{}", target_id(group))
        return Call("DELETE", path, nothing, params=params, headers=headers)


class Groups(SyncResource):
    """Audience groups: ``client.groups``."""

    list = pages(Calls.list, Group)
    get = sends(Calls.get)
    create = sends(Calls.create)
    update = sends(Calls.update)
    patch = sends(Calls.patch)
    delete = sends(Calls.delete)


class AsyncGroups(AsyncResource):
    """Audience groups: ``client.groups`` of an :class:`AsyncClient`."""

    list = pages_async(Calls.list, Group)
    get = sends_async(Calls.get)
    create = sends_async(Calls.create)
    update = sends_async(Calls.update)
    patch = sends_async(Calls.patch)
    delete = sends_async(Calls.delete)

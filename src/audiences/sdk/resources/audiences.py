"""``/v1/audiences``: create, list, get, update, delete, bulk-get, refresh, sync and preview; and,
bound here so that ``client.audiences.members(a)`` reads as it should, members, changes, runs,
member writes and exports (built in ``members.py`` and ``runs.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from audiences.schemas.audiences import Audience, BulkResult
from audiences.schemas.common import Page
from audiences.schemas.jobs import Job
from audiences.schemas.memberships import Change, Member, PreviewResult, Run
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
    rfc3339,
)
from audiences.sdk._resource import (
    AsyncResource,
    SyncResource,
    pages,
    pages_async,
    sends,
    sends_async,
)
from audiences.sdk.resources import members as member_calls
from audiences.sdk.resources import runs as run_calls
from audiences.sdk.resources._targets import Target, match_headers, precondition, target_id

PATH = "/v1/audiences"
Ids = list[str]


class Calls:
    """The requests of the audience resource."""

    @staticmethod
    def list(
        *,
        q: str | None = None,
        kind: str | list[str] | None = None,
        lifecycle_state: str | list[str] | None = None,
        archived: bool | None = None,
        group: str | list[str] | None = None,
        label: str | list[str] | None = None,
        key: str | list[str] | None = None,
        id: str | list[str] | None = None,
        sort: str | None = None,
        include: str | None = None,
        updated_since: datetime | str | None = None,
        members_changed_since: datetime | str | None = None,
        fields: Fields = None,
        limit: int | None = None,
    ) -> Call[Page[Audience]]:
        """Every audience matching the filters (several values of one filter: any of them)."""
        params = clean(
            {
                "q": q,
                "kind": kind,
                "lifecycle_state": lifecycle_state,
                "archived": archived,
                "group": group,
                "label": label,
                "key": key,
                "id": id,
                "sort": sort,
                "include": include,
                "updated_since": updated_since and rfc3339(updated_since),
                "members_changed_since": members_changed_since and rfc3339(members_changed_since),
                "fields": fields,
                "limit": limit,
            }
        )
        return Call("GET", PATH, reading_page(Audience, fields), params=params)

    @staticmethod
    def get(
        audience: Target, *, include: str | None = None, fields: Fields = None
    ) -> Call[Audience]:
        """One audience (``include="group"`` embeds its group; ``fields``: only these, see
        :func:`~audiences.sdk._call.partial`)."""
        params = clean({"include": include, "fields": fields})
        path = endpoint(PATH + "/{}", target_id(audience))
        return Call("GET", path, reading(Audience, fields), params=params)

    @staticmethod
    def create(*, key: str, name: str, kind: str, **fields: Any) -> Call[Audience]:
        """A new audience: ``kind`` is ``static``, ``dynamic`` (with a ``rule``) or
        ``external``; other fields as the API documents them. Retries reuse one
        ``Idempotency-Key``, so the server creates it once."""
        return created(PATH, model(Audience), {"key": key, "name": name, "kind": kind, **fields})

    @staticmethod
    def update(
        audience: Target, *, if_match: bool | int | str | None = None, **changes: Any
    ) -> Call[Audience]:
        """Change some fields (a JSON merge patch; ``None`` clears one). ``if_match=True``
        with the audience model sends its ETag: 412 ``PreconditionFailed`` if it changed."""
        return merge_patch(
            endpoint(PATH + "/{}", target_id(audience)),
            model(Audience),
            changes,
            precondition(audience, if_match),
        )

    @staticmethod
    def replace(
        audience: Target, body: dict[str, Any], *, if_match: bool | int | str | None = None
    ) -> Call[Audience]:
        """Replace every writable field with ``body`` (PUT)."""
        headers = match_headers(audience, if_match)
        path = endpoint(PATH + "/{}", target_id(audience))
        return Call("PUT", path, model(Audience), json=body, headers=headers)

    @staticmethod
    def patch(
        audience: Target,
        operations: Sequence[Mapping[str, Any]],
        *,
        if_match: bool | int | str | None = None,
    ) -> Call[Audience]:
        """Edit with a JSON Patch (RFC 6902): ``[{"op": "replace", "path": "/name", "value":
        ...}, {"op": "test", "path": "/version", "value": 3}, ...]``, applied whole or not at
        all (a failed ``test`` is 409 ``patch_test_failed``)."""
        path = endpoint(PATH + "/{}", target_id(audience))
        return json_patch(path, model(Audience), operations, precondition(audience, if_match))

    @staticmethod
    def delete(audience: Target, *, if_match: bool | int | str | None = None) -> Call[None]:
        """Delete it (``Conflict`` ``has_dependents`` while other rules read it)."""
        headers = match_headers(audience, if_match)
        return Call("DELETE", endpoint(PATH + "/{}", target_id(audience)), nothing, headers=headers)

    @staticmethod
    def bulk_get(ids: Ids) -> Call[BulkResult]:
        """Up to 100 audiences by id, each with its status and body or problem."""
        return Call("POST", f"{PATH}/bulk-get", model(BulkResult), json={"ids": ids}, safe=True)

    @staticmethod
    def refresh(audience: Target) -> Call[Run]:
        """Evaluate it now: the run it started (static audiences: expiry)."""
        return Call("POST", endpoint(PATH + "/{}/refresh", target_id(audience)), model(Run))

    @staticmethod
    def sync(audience: Target) -> Call[Job]:
        """Sync an external audience with its file or SQL source now: the ``membership.sync``
        job (``client.jobs.wait(job, on_progress=…)`` follows it: rows read of the rows counted,
        ``counts["bytes_fetched"]`` while a file comes in; the audience's ``sync.progress``
        shows the same while it runs, and ``sync`` says how it went)."""
        return created(f"{PATH}/{target_id(audience)}/sync", model(Job), None)

    @staticmethod
    def preview(
        rule: str | dict[str, Any], *, audience: Target | None = None, sample: int = 10
    ) -> Call[PreviewResult]:
        """What ``rule`` would select now (its size, a sample, its mode); with ``audience``,
        also who would enter and exit it. Nothing is stored."""
        path = (
            f"{PATH}/preview"
            if audience is None
            else endpoint(PATH + "/{}/preview", target_id(audience))
        )
        body = {"rule": rule, "sample": sample}
        return Call("POST", path, model(PreviewResult), json=body, safe=True)


class Audiences(SyncResource):
    """Audiences: ``client.audiences``."""

    list = pages(Calls.list, Audience)
    get = sends(Calls.get)
    create = sends(Calls.create)
    update = sends(Calls.update)
    patch = sends(Calls.patch)
    replace = sends(Calls.replace)
    delete = sends(Calls.delete)
    bulk_get = sends(Calls.bulk_get)
    refresh = sends(Calls.refresh)
    sync = sends(Calls.sync)
    preview = sends(Calls.preview)
    members = pages(member_calls.Calls.list, Member)
    membership = sends(member_calls.Calls.membership)
    explain = sends(member_calls.Calls.explain)
    changes = pages(member_calls.Calls.changes, Change)
    write_members = sends(member_calls.Calls.write)
    runs = pages(run_calls.Calls.list, Run)
    run = sends(run_calls.Calls.get)

    def export(
        self, audience: Target, *, format: str = "csv", raw: bool = False
    ) -> member_calls.Export:
        """Every member, streamed: ``for chunk in client.audiences.export(a): ...`` or
        ``.to_file(path)``."""
        return member_calls.Export(
            self._http, member_calls.Calls.export(audience, format=format, raw=raw)
        )


class AsyncAudiences(AsyncResource):
    """Audiences: ``client.audiences`` of an :class:`AsyncClient`."""

    list = pages_async(Calls.list, Audience)
    get = sends_async(Calls.get)
    create = sends_async(Calls.create)
    update = sends_async(Calls.update)
    patch = sends_async(Calls.patch)
    replace = sends_async(Calls.replace)
    delete = sends_async(Calls.delete)
    bulk_get = sends_async(Calls.bulk_get)
    refresh = sends_async(Calls.refresh)
    sync = sends_async(Calls.sync)
    preview = sends_async(Calls.preview)
    members = pages_async(member_calls.Calls.list, Member)
    membership = sends_async(member_calls.Calls.membership)
    explain = sends_async(member_calls.Calls.explain)
    changes = pages_async(member_calls.Calls.changes, Change)
    write_members = sends_async(member_calls.Calls.write)
    runs = pages_async(run_calls.Calls.list, Run)
    run = sends_async(run_calls.Calls.get)

    def export(
        self,
        audience: Target,
        *,
        format: str = "csv",
        raw: bool = False,
    ) -> member_calls.AsyncExport:
        """Every member, streamed: ``async for chunk in client.audiences.export(a)``."""
        return member_calls.AsyncExport(
            self._http, member_calls.Calls.export(audience, format=format, raw=raw)
        )

"""An audience's members: the paged list, one profile's membership (and why), the changes
since a run, writes by id, and the streamed export."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from audiences.schemas.jobs import Job
from audiences.schemas.memberships import ChangePage, MemberPage, Membership
from audiences.sdk._call import Call, clean, created, endpoint, model, nothing
from audiences.sdk._http import AsyncHttp, SyncHttp
from audiences.sdk.resources._targets import Target, target_id

CHUNK = 1 << 16
Ids = list[str]
Changes = list[dict[str, str]]


def _path(audience: Target, tail: str, *segments: str) -> str:
    return endpoint("/v1/audiences/{}/" + tail, target_id(audience), *segments)


class Calls:
    """The requests of an audience's members."""

    @staticmethod
    def list(
        audience: Target, *, as_of: str | None = None, limit: int | None = None
    ) -> Call[MemberPage]:
        """Its members by external id, in a stable order (``as_of``: a past run's members)."""
        params = clean({"as_of": as_of, "limit": limit})
        return Call("GET", _path(audience, "members"), model(MemberPage), params=params)

    @staticmethod
    def membership(audience: Target, profile_id: str) -> Call[Membership]:
        """Is this profile a member, as of when."""
        return Call("GET", _path(audience, "members/{}", profile_id), model(Membership))

    @staticmethod
    def explain(audience: Target, profile_id: str) -> Call[Membership]:
        """Is this profile a member, and why: the rule tree with each node's value."""
        path = _path(audience, "members/{}", profile_id)
        return Call("GET", path, model(Membership), params={"explain": "true"})

    @staticmethod
    def changes(
        audience: Target, *, since: str | None = None, limit: int | None = None
    ) -> Call[ChangePage]:
        """Who entered and exited since run ``since`` (without it: in the latest run)."""
        params = clean({"since": since, "limit": limit})
        return Call("GET", _path(audience, "changes"), model(ChangePage), params=params)

    @staticmethod
    def write(
        audience: Target,
        *,
        action: str | None = None,
        ids: Ids | None = None,
        changes: Changes | None = None,
    ) -> Call[Job]:
        """Add, remove or replace a static audience's members by id (``action`` and ``ids``),
        or each id with its own action (``changes``): the job that applies it."""
        body: dict[str, Any] = (
            {"changes": changes} if changes is not None else {"action": action, "ids": ids}
        )
        return created(_path(audience, "members"), model(Job), body)

    @staticmethod
    def export(audience: Target, *, format: str = "csv", raw: bool = False) -> Call[None]:
        """Every member as CSV or NDJSON, streamed (read through :class:`Export`)."""
        params = clean({"format": format, "raw": raw or None})
        return Call("GET", _path(audience, "export"), nothing, params=params)


class Export:
    """A streamed export: iterate its byte chunks, or write it to a file."""

    def __init__(self, http: SyncHttp, call: Call[None]) -> None:
        self._http = http
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        with self._http.stream(self._call) as response:
            yield from response.iter_bytes(CHUNK)

    def to_file(self, path: str | Path) -> int:
        """Write the export to ``path``; the bytes written."""
        written = 0
        with Path(path).open("wb") as out:
            for chunk in self:
                written += out.write(chunk)
        return written


class AsyncExport:
    """A streamed export for ``async for``."""

    def __init__(self, http: AsyncHttp, call: Call[None]) -> None:
        self._http = http
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with self._http.stream(self._call) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk

    async def to_file(self, path: str | Path) -> int:
        """Write the export to ``path``; the bytes written."""
        written = 0
        with Path(path).open("wb") as out:
            async for chunk in self:
                written += out.write(chunk)
        return written

"""One API call described as data: what to send and how to read the answer.

Resources build calls; the sync and async transports (``_http.py``) send them. A call is
sent again unchanged when it is retried, so a create's ``Idempotency-Key``, made when the call
is built, is the same on every attempt and the server applies it once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from audiences.schemas.common import Page, sparse_model

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
"""Methods whose repetition changes nothing more (PUT and DELETE are idempotent by HTTP)."""
Params = Mapping[str, Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request and the function that turns its successful response into ``T``."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Callable[[], Iterator[bytes]] | None = None
    """Makes the streamed body afresh for each attempt (an upload read from disk)."""
    abody: Callable[[], AsyncIterator[bytes]] | None = None
    safe: bool = False
    """Retrying it is harmless though it is a POST (a preview, an evaluation)."""

    @property
    def retryable(self) -> bool:
        """Whether a failed attempt may be sent again: it cannot apply twice."""
        return self.safe or self.method in SAFE_METHODS or "Idempotency-Key" in self.headers

    def with_params(self, **params: Any) -> Call[T]:
        """The same call with some query parameters replaced (the next page's cursor)."""
        return replace(self, params={**self.params, **params})


def endpoint(template: str, *segments: str) -> str:
    """A request path: ``template``'s ``{}`` slots filled with ``segments``, each one
    percent-encoded whole (:func:`segment`). Every path that carries client data is built
    here, so an id holding ``/``, ``?``, ``#``, ``%``, spaces or any Unicode names one resource.

    >>> endpoint("/v1/profiles/{}/events", "orders/42 #1")
    '/v1/profiles/orders%2F42%20%231/events'
    """
    return template.format(*(segment(value) for value in segments))


def segment(value: str) -> str:
    """One path segment percent-encoded (UTF-8), ``/`` included; ``.`` and ``..``, which
    clients and proxies would resolve away, are encoded too."""
    if value in (".", ".."):
        return "%2E" * len(value)
    return quote(value, safe="")


def clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters without the ``None`` ones; lists become comma lists, booleans words."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple | set | frozenset):
            value = ",".join(str(item) for item in value)
        out[name] = value
    return out


def rfc3339(value: datetime | str) -> str:
    """A time as the API takes it: a ``datetime`` written with its offset (one without an
    offset is taken as UTC, as the command line takes it), RFC 3339 text as given."""
    if isinstance(value, str):
        return value
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """A parser of a JSON body into ``cls`` (validated from bytes by pydantic-core)."""
    return lambda response: cls.model_validate_json(response.content)


Fields = str | list[str] | None
"""``fields=``: the names of the fields to return (``id`` always comes back); all without it."""


def reading(cls: type[M], fields: Fields) -> Callable[[httpx.Response], M]:
    """The parser of one resource: whole, or partial when ``fields`` names some."""
    if fields is None:
        return model(cls)
    sparse = _sparse(cls)
    return lambda response: partial(cls, sparse.model_validate_json(response.content))


def reading_page(cls: type[M], fields: Fields) -> Callable[[httpx.Response], Page[M]]:
    """The parser of a page of ``cls``, its items partial when ``fields`` names some."""
    if fields is None:
        return model(Page[cls])  # type: ignore[valid-type]
    sparse = _sparse(cls)

    def parse(response: httpx.Response) -> Page[M]:
        got = Page[sparse].model_validate_json(response.content)  # type: ignore[valid-type]
        page: Page[M] = Page[cls].model_construct(  # type: ignore[valid-type]
            **{name: getattr(got, name) for name in got.model_fields_set - {"data"}},
            data=[partial(cls, item) for item in got.data],
        )
        return page

    return parse


def partial(cls: type[M], sparse: BaseModel) -> M:
    """A ``cls`` holding only the fields a sparse answer carried, each validated (times are
    datetimes): ``model_fields_set`` names them, and reading another raises ``AttributeError``
    (it was not asked for, so no default stands in for it)."""
    present = sparse.model_fields_set
    made = cls.model_construct(_fields_set=present, **{n: getattr(sparse, n) for n in present})
    for name in set(cls.model_fields) - present:
        made.__dict__.pop(name, None)
    return made


@functools.cache
def _sparse(cls: type[BaseModel]) -> type[BaseModel]:
    return sparse_model(cls, f"Sparse{cls.__name__}")


def nothing(response: httpx.Response) -> None:
    """The parser of an answer without a body (204)."""


def created(path: str, parse: Callable[[httpx.Response], T], body: Any) -> Call[T]:
    """A ``POST`` that creates something, with a fresh ``Idempotency-Key`` for all its tries."""
    return Call("POST", path, parse, json=body, headers={"Idempotency-Key": new_key()})


def new_key() -> str:
    """A new idempotency key."""
    return f"sdk-{uuid.uuid4().hex}"


def etag(version: int | str) -> str:
    """The strong ETag of a resource ``version`` (``If-Match`` takes it); a tag passes as is."""
    text = str(version)
    return text if text.startswith('"') or text == "*" else f'"{text}"'


def merge_patch(
    path: str, parse: Callable[[httpx.Response], T], changes: dict[str, Any], if_match: str | None
) -> Call[T]:
    """A JSON merge patch of ``changes``, guarded by ``If-Match`` when given."""
    return _patch(path, parse, changes, "application/merge-patch+json", if_match)


def json_patch(
    path: str,
    parse: Callable[[httpx.Response], T],
    operations: Iterable[Mapping[str, Any]],
    if_match: str | None,
) -> Call[T]:
    """A JSON Patch (RFC 6902) of ``operations`` (``add``, ``remove``, ``replace``, ``move``,
    ``copy``, ``test``), applied whole or not at all, guarded by ``If-Match`` when given."""
    body = [dict(operation) for operation in operations]
    return _patch(path, parse, body, "application/json-patch+json", if_match)


def _patch(
    path: str, parse: Callable[[httpx.Response], T], body: Any, kind: str, if_match: str | None
) -> Call[T]:
    headers = {"Content-Type": kind} | ({} if if_match is None else {"If-Match": if_match})
    return Call("PATCH", path, parse, json=body, headers=headers)


def unset(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without those left at :data:`UNSET` (a field not to change)."""
    return {name: value for name, value in values.items() if value is not UNSET}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""The default of update arguments: leave the field as it is (``None`` clears it)."""

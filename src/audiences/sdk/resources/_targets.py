"""Naming a resource in a call: by id, or by the model itself (which also knows its version)."""

from __future__ import annotations

from typing import Protocol

from audiences.sdk._call import etag


class Versioned(Protocol):
    """A resource as returned: its id and version (the ETag is the quoted version)."""

    @property
    def id(self) -> str: ...  # pragma: no cover

    @property
    def version(self) -> int: ...  # pragma: no cover


Target = str | Versioned
"""An id, or a resource returned by an earlier call."""


def target_id(target: Target) -> str:
    """The id of ``target``."""
    return target if isinstance(target, str) else target.id


def precondition(target: Target, condition: bool | int | str | None) -> str | None:
    """The ``If-Match`` to send: ``True`` takes the ETag of the model given as ``target``, a
    version or an ETag is sent as it is, ``None``/``False`` sends none."""
    if condition is None or condition is False:
        return None
    if condition is True:
        if isinstance(target, str):
            raise ValueError("if_match=True needs the resource itself (it carries its version)")
        return etag(target.version)
    return etag(condition)


def match_headers(target: Target, condition: bool | int | str | None) -> dict[str, str]:
    """``{"If-Match": …}`` for :func:`precondition`'s tag, or no header."""
    tag = precondition(target, condition)
    return {} if tag is None else {"If-Match": tag}

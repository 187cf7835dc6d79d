"""Path segments that hold a ``/``: external ids are the client's own strings, so an id like
``orders/42`` is sent percent-encoded (``/v1/profiles/orders%2F42``) and must name one profile.

ASGI servers decode the path before routing, which turns ``%2F`` into a separator and the id
into two segments (no route). :class:`EncodedSlashMiddleware` decodes the raw path segment by
segment instead, and writes a ``/`` inside a segment as :data:`SLASH`, a character no id may
hold (ids refuse control characters), so the router sees one segment; the path parameters of
external ids turn it back (:func:`restore_slashes`, in ``deps.ProfileId``). Every other path
parameter has a pattern without control characters, so an encoded slash there stays refused.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

SLASH = "\x00"
"""Stands for a ``/`` inside one path segment while the request is routed."""
_FORGED = "\x01"
"""What a ``%00`` the client sent becomes, so that it cannot pass for an encoded slash (and
is refused as the control character it is)."""


class EncodedSlashMiddleware:
    """Routes ``%2F`` inside a path segment as part of that segment (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            path = "/".join(_segment(segment) for segment in raw.split(b"/"))
            scope = {**scope, "path": path}
        await self.app(scope, receive, send)


def _segment(raw: bytes) -> str:
    """One raw segment decoded as a server decodes a path (UTF-8, bytes that are not kept
    as surrogates), its encoded slash written as :data:`SLASH`. The bytes are unquoted before
    they are decoded, so raw UTF-8 next to a ``%`` escape reads as the same text."""
    text = unquote_to_bytes(raw).decode("utf-8", "surrogateescape")
    return text.replace(SLASH, _FORGED).replace("/", SLASH)


def restore_slashes(value: str) -> str:
    """A path parameter as the client meant it: its encoded slashes given back."""
    return value.replace(SLASH, "/")


def shown(path: str) -> str:
    """A routed path as a client can read it (``instance`` of a problem): encoded slashes
    encoded again."""
    return path.replace(SLASH, "%2F")


SEGMENT_SAFE = "!$&'()*+,;=:@~"
"""Characters a path segment may hold as they are (RFC 3986 ``pchar``); all else is encoded."""


def url_of(request: Request) -> URL:
    """The request's URL as a client can send it again (a ``Link`` to the next page): each
    routed segment percent-encoded, so an encoded slash is ``%2F`` again, never the stand-in
    (a control character in a header, which the server refuses to send)."""
    segments = request.url.path.split("/")
    encoded = "/".join(
        quote(restore_slashes(part), safe=SEGMENT_SAFE, errors="surrogateescape")
        for part in segments
    )
    return request.url.replace(path=encoded)

"""Where the service may send requests: the SSRF guard for every URL a client hands us.

Webhook endpoints and the URLs of synced lists are chosen by API callers, and the service
fetches or posts to them from inside the deployment's network. Unless the operator allows it
(``AUDIENCES_EGRESS_ALLOW_PRIVATE``, for tests and on-premise receivers), a URL must be http(s)
and every address its host resolves to must be public: not loopback, private, link-local
(cloud metadata lives at 169.254.169.254), multicast, reserved or unspecified.

The host is checked both when a URL is saved (``checked_url``, a clear 400 at once) and again
right before each request (``check_resolved``), since a name may resolve elsewhere later.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from audiences.errors import InvalidParameter

SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048


def checked_url(url: str, *, allow_private: bool, resolve: bool = False) -> str:
    """``url`` unchanged when the service may send to it; ``InvalidParameter`` (code
    ``url_not_allowed``) when not: another scheme, credentials in it, no host, too long, or
    (unless ``allow_private``) a host that is a non-public address. With ``resolve``, a host
    name is looked up too and every address it has must be public."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"A URL is at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _refused(f"The URL cannot be read: {error}.") from None
    if parts.scheme not in SCHEMES:
        raise _refused("A URL must start with http:// or https://.")
    if parts.username or parts.password:
        raise _refused("A URL may not carry a user name or password; use a signing secret.")
    host = parts.hostname
    if not host:
        raise _refused("The URL names no host.")
    if allow_private:
        return url
    literal = _address(host)
    if literal is not None:
        _check_public(literal, host)
    elif host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise _refused(f"{host} is a private host name.")
    elif resolve:
        check_resolved(host, port or (443 if parts.scheme == "https" else 80))
    return url


def check_resolved(host: str, port: int) -> None:
    """Refuse (``url_not_allowed``) a host any of whose addresses is not public, or that does
    not resolve; call right before connecting, so a name re-pointed since it was saved is
    caught too."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise _refused(f"{host} does not resolve: {error}.") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        _check_public(address, host)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _check_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        raise _refused(
            f"{host} is a loopback, private or reserved address; the operator may allow such "
            "receivers with AUDIENCES_EGRESS_ALLOW_PRIVATE=true."
        )


def _refused(message: str) -> InvalidParameter:
    return InvalidParameter(message, code="url_not_allowed")

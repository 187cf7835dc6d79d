"""Where the service may send requests: the SSRF guard for every URL a client hands us.

Webhook endpoints and the URLs of synced lists are chosen by API callers, and the service
fetches or posts to them from inside the deployment's network. Unless the operator allows it
(``AUDIENCES_EGRESS_ALLOW_PRIVATE``, for tests and on-premise receivers), a URL must be http(s)
and every address its host resolves to must be public: not loopback, private, link-local
(cloud metadata lives at 169.254.169.254), multicast, reserved or unspecified.

A host must also be a name httpx can send to: its labels (as IDNA encodes a non-ASCII one,
the way httpx does) 1 to 63 characters, the whole name at most 253; otherwise the request
would fail only when sent, long after the URL was accepted.

The host is checked both when a URL is saved (``checked_url``, a clear 400 at once) and again
when each request is sent: :func:`pinned_client` resolves the name once, checks every address
and connects to a checked one, so a name that answers a public address to the check and a
private one to the connection (DNS rebinding) cannot slip through. The ``Host`` header, TLS SNI
and certificate checks keep the name. An IPv6 address that carries an IPv4 one (mapped
``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) must
carry a public one.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import httpx

from audiences.errors import InvalidParameter

SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048
MAX_LABEL_LENGTH = 63
"""The longest label of a host name (RFC 1035 2.3.4), after IDNA encoding."""
MAX_NAME_LENGTH = 253
"""The longest host name in text, without a final dot (255 octets on the wire)."""


def checked_url(url: str, *, allow_private: bool, resolve: bool = False) -> str:
    """``url`` unchanged when the service may send to it; ``InvalidParameter`` (code
    ``url_not_allowed``) when not: another scheme, credentials in it, no host, too long, a
    host httpx cannot send to (see :func:`_check_name`, whatever ``allow_private`` says), or
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
    if not parts.hostname:
        raise _refused("The URL names no host.")
    # The host as the HTTP client will send to it (IDNA-encoded, ideographic full stops read
    # as dots), without a fully qualified name's final dot.
    host = _check_name(url).removesuffix(".")
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


def _check_name(url: str) -> str:
    """The host httpx will connect to (its ``raw_host``), or a refusal when httpx would refuse
    it at send: read by httpx itself (an IDNA name is encoded as httpx encodes it, and an
    ``xn--`` one must decode), then each label of the name 1 to 63 characters and the name at
    most 253 (Python's resolver raises ``UnicodeError``, not ``OSError``, on an empty or long
    label)."""
    try:
        parsed = httpx.URL(url)
        _ = parsed.host  # decodes an xn-- name, as httpx does for the Host header
    except (httpx.InvalidURL, UnicodeError) as error:
        raise _refused(f"The URL cannot be sent to by the HTTP client: {error}"[:300]) from None
    raw = parsed.raw_host.decode("ascii")
    if _address(raw) is not None:
        return raw
    name = raw.removesuffix(".")  # a fully qualified name's final dot
    if len(name) > MAX_NAME_LENGTH:
        raise _refused(f"A host name is at most {MAX_NAME_LENGTH} characters (encoded).")
    if any(not 0 < len(label) <= MAX_LABEL_LENGTH for label in name.split(".")):
        raise _refused(
            f"Each part of a host name between dots is 1 to {MAX_LABEL_LENGTH} characters "
            "(encoded)."
        )
    return raw


def check_resolved(host: str, port: int) -> None:
    """Refuse (``url_not_allowed``) a host any of whose addresses is not public, or that does
    not resolve. A check alone leaves a window (the connection resolves again): connect with
    :func:`pinned_client`, which checks the very address it connects to."""
    resolved(host, port, allow_private=False)


def resolved(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for ``host``: resolved once, every address checked (unless
    ``allow_private``), the first returned; ``url_not_allowed`` when one is not public or the
    name does not resolve. An address written in the URL is its own answer (no lookup)."""
    literal = _address(host)
    if literal is not None:
        if not allow_private:
            _check_public(literal, host)
        return str(literal).split("%", 1)[0]  # as a lookup answers: no IPv6 zone
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # UnicodeError: a label empty or over 63
        raise _refused(f"{host} does not resolve: {error}.") from None
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
    if not addresses:
        raise _refused(f"{host} does not resolve.")
    if not allow_private:
        for address in addresses:
            _check_public(ipaddress.ip_address(address), host)
    return addresses[0]


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that sends each request to an address :func:`resolved` checked for
    it: the name is looked up once per request, here, and the request goes to that address
    with the name kept where the receiver and TLS see it (the ``Host`` header, and httpx's
    ``sni_hostname`` request extension, which TLS uses for SNI and the certificate check).

    Connections are pooled per name (one ``httpx.HTTPTransport`` each), so a connection whose
    certificate was checked for one name never carries a request for another name that
    resolves to the same address."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._by_name: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to its host's checked address (``InvalidParameter`` if refused)."""
        url = request.url
        name = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        address = resolved(name, port, allow_private=self.allow_private)
        extensions = dict(request.extensions)
        if _address(name) is None:
            extensions["sni_hostname"] = name
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=address),
            headers=request.headers,  # the Host header httpx wrote from the name
            stream=request.stream,
            extensions=extensions,
        )
        transport = self._by_name.get(name)
        if transport is None:
            transport = self._by_name[name] = httpx.HTTPTransport(verify=_tls(), trust_env=False)
        return transport.handle_request(pinned)

    def close(self) -> None:
        """Close every name's connections."""
        for transport in self._by_name.values():
            transport.close()
        self._by_name.clear()


def pinned_client(*, allow_private: bool, timeout: httpx.Timeout | float) -> httpx.Client:
    """An httpx client for client-given URLs: each request goes to an address checked as it
    is sent (:class:`PinnedTransport`), no proxy from the environment, no redirect followed on
    its own (check each ``Location`` with :func:`checked_url` and send it again). A refused
    address raises ``InvalidParameter`` (``url_not_allowed``) from the request."""
    return httpx.Client(
        transport=PinnedTransport(allow_private=allow_private),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one costs more than a request on loopback."""
    return httpx.create_ssl_context(trust_env=False)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as one names, as the resolver reads it: also with a final
    dot, and in IPv4's older forms (``2130706433``, ``0x7f000001``, ``127.1``) that
    ``getaddrinfo`` accepts; None for a name."""
    bare = host.strip("[]").removesuffix(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except (OSError, ValueError):  # ValueError: a NUL or a character ASCII cannot encode
        return None


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix: its last 32 bits are an IPv4 address the gateway reaches."""


def _check_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> None:
    for each in (address, *_embedded(address)):
        if not each.is_global or each.is_multicast:
            raise _refused_private(host)


def _embedded(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries: mapped, compatible (``::a.b.c.d``), NAT64
    and 6to4."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if int(address) >> 32 == 0 or address in NAT64:
        found.append(low)
    return found


def _refused_private(host: str) -> InvalidParameter:
    return _refused(
        f"{host} is a loopback, private or reserved address; the operator may allow such "
        "receivers with AUDIENCES_EGRESS_ALLOW_PRIVATE=true."
    )


def _refused(message: str) -> InvalidParameter:
    return InvalidParameter(message, code="url_not_allowed")

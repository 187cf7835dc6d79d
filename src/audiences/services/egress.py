"""Where the service may send requests: the SSRF guard for every URL a client hands us.

Webhook endpoints and the URLs of synced lists are chosen by API callers, and the service
fetches or posts to them from inside the deployment's network. Unless the operator allows it
(``AUDIENCES_EGRESS_ALLOW_PRIVATE``, for tests and on-premise receivers), a URL must be http(s)
and every address its host resolves to must be public: not loopback, private, link-local
(cloud metadata lives at 169.254.169.254), multicast, reserved or unspecified.

URLs are read by ``httpx.URL`` (here and as each request is sent, so the name checked is the
name sent to), and a host must be a name it can send to: its labels (as IDNA encodes a
non-ASCII one, the way httpx does) 1 to 63 characters, the whole name at most 253; otherwise
the request would fail only when sent, long after the URL was accepted. The requests
themselves go out through urllib3 (:class:`PinnedClient`).

The host is checked both when a URL is saved (``checked_url``, a clear 400 at once) and again
when each request is sent: :class:`PinnedClient` resolves the name once, checks every address
and connects to a checked one, so a name that answers a public address to the check and a
private one to the connection (DNS rebinding) cannot slip through. The ``Host`` header, TLS SNI
and certificate checks keep the name. An IPv6 address that carries an IPv4 one (mapped
``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) must
carry a public one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import urllib3

from audiences.errors import InvalidParameter

SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048
MAX_LABEL_LENGTH = 63
"""The longest label of a host name (RFC 1035 2.3.4), after IDNA encoding."""
HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
"""What a host name may hold once IDNA-encoded: anything else (a space, a ``%`` escape) names
no host the resolver can look up."""
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
        raise _refused("A URL may not carry a user name or password.")
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
    if not HOST_NAME.fullmatch(name):  # "exa mple.com" reaches here as "exa%20mple.com"
        raise _refused(
            "A host name holds letters, digits, hyphens, underscores and dots only "
            "(a non-ASCII name as IDNA encodes it)."
        )
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
    :class:`PinnedClient`, which checks the very address it connects to."""
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


@dataclass(frozen=True)
class _Target:
    """Where a URL sends a request, as httpx reads the URL (the reading the name checks use):
    the scheme, the host name (IDNA-encoded), its port, the ``Host`` header and the path with
    its query."""

    scheme: str
    name: str
    port: int
    host_header: str
    path: str


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    """``url`` read once (a destination sends every message to the same URL)."""
    parsed = httpx.URL(url)
    scheme = parsed.scheme
    if scheme not in SCHEMES:
        raise _refused("A URL must start with http:// or https://.")
    name = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if scheme == "https" else 80)
    host_header = parsed.netloc.decode("ascii")
    return _Target(scheme, name, port, host_header, parsed.raw_path.decode("ascii"))


class PinnedClient:
    """Requests to client-given URLs, each sent to an address :func:`resolved` checked for it:
    the name is looked up once per request, here, and the request goes to that address with
    the name kept where the receiver and TLS see it (the ``Host`` header, SNI and the
    certificate check). No proxy from the environment, no redirect followed on its own (check
    each ``Location`` with :func:`checked_url` and send it again).

    Sent by urllib3: on the webhook benchmark (``bench/deliveries``) a POST of a 100 KB message
    through it took 0.9 ms of CPU against httpx's 1.6-1.9 ms, and a delivery run's sending
    line shares the interpreter with the run that builds its messages.

    Connections are pooled per name and address, so a connection whose certificate was
    checked for one name never carries a request for another name that resolves to the
    same address. Meant for one thread at a time (a delivery run, a sync's download)."""

    def __init__(self, *, allow_private: bool, timeout: float) -> None:
        self.allow_private = allow_private
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send the request to the checked address of ``url``'s host and return the answer
        unread (read it, then :meth:`done` with it). ``InvalidParameter``
        (``url_not_allowed``) when the address is refused; urllib3's errors (each a
        ``urllib3.exceptions.HTTPError``) when the request fails."""
        target = _target(url)
        address = resolved(target.name, target.port, allow_private=self.allow_private)
        pool = self._pool(target, address)
        answer = pool.urlopen(
            method,
            target.path,
            body=body,
            headers={"host": target.host_header, **(headers or {})},
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        if answer.status < 200:
            # http.client passes over 100 Continue only: another informational answer (103
            # Early Hints) arrives as if final, with the real one still to come on the
            # connection, which is closed so that no later request reads it.
            answer.close()
            answer.release_conn()
            raise urllib3.exceptions.ProtocolError(
                f"the server sent an informational answer ({answer.status}), which is not supported"
            )
        return answer

    @staticmethod
    def done(answer: urllib3.BaseHTTPResponse) -> None:
        """Give the answer's connection back to its pool when the answer was read to its
        end (the spent body closed, or a connection the server closes would stay open until
        collected); close it otherwise (what was left unread is never read)."""
        if answer.closed or answer.length_remaining == 0:
            answer.drain_conn()
        else:
            answer.close()
            answer.release_conn()

    def _pool(self, target: _Target, address: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.name, target.port, address)
        pool = self._pools.get(key)
        if pool is None:
            options: dict[str, Any] = {"timeout": self._timeout, "retries": False, "maxsize": 1}
            if target.scheme == "https":
                named = _address(target.name) is None
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    target.port,
                    ssl_context=_tls(),
                    server_hostname=target.name if named else None,
                    **options,
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, target.port, **options)
            self._pools[key] = pool
        return pool

    def close(self) -> None:
        """Close every connection."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def __enter__(self) -> PinnedClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def timed_out(error: urllib3.exceptions.HTTPError) -> bool:
    """Whether a failed request ran out of time: connecting, reading the answer, or sending
    the body (urllib3 reports a send that timed out as a dropped connection). A refused
    connection is not, though urllib3's ``NewConnectionError`` descends from its
    ``ConnectTimeoutError``."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return False
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return True
    return isinstance(error, urllib3.exceptions.ProtocolError) and any(
        isinstance(arg, TimeoutError) for arg in error.args
    )


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process (building one costs more than a request on loopback):
    certificates checked for the name against certifi's authorities, as httpx checks them."""
    return ssl.create_default_context(cafile=certifi.where())


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

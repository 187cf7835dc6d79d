"""The SSRF guard's host-name check: a URL is accepted only when httpx and the resolver can
send to its host (labels of 1 to 63 characters, names of at most 253, IDNA encoded as httpx
encodes it), so a bad name is refused when saved, not when its first message is sent."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from audiences.errors import InvalidParameter
from audiences.services.egress import checked_url, resolved

LONG_LABEL = "a" * 64
LONG_NAME = ".".join(["a" * 63] * 4)  # 255 characters


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "url",
    [
        f"https://{LONG_LABEL}.example.com/hook",
        f"https://hooks.{LONG_LABEL}/hook",
        f"https://{LONG_NAME}/hook",
        "https://hooks..example.com/hook",
        "https://.example.com/hook",
        "https://example.com../hook",
        f"https://{'a' * 56}ü.example.com/hook",  # 57 characters, 64 once encoded
        "https://☃-⌘.example.com/hook",  # no IDNA encoding
        "https://xn--aaaaaaaa.example.com/hook",  # an xn-- name that does not decode
        "http://999.1.2.3/hook",  # not an IPv4 address
    ],
)
def test_names_httpx_cannot_send_to_are_refused(url: str, allow_private: bool) -> None:
    with pytest.raises(InvalidParameter) as caught:
        checked_url(url, allow_private=allow_private)
    assert caught.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{'a' * 63}.example.com/hook",
        f"https://{'.'.join(['a' * 63] * 3 + ['a' * 61])}/hook",  # 253 characters
        f"https://{'.'.join(['a' * 63] * 3 + ['a' * 61])}./hook",  # and a final dot
        "https://bücher.example/hook",
        f"https://{'a' * 55}ü.example.com/hook",  # 63 once encoded
        "https://ß.example/hook",
        "https://HOOKS.Example.COM./hook",
    ],
)
def test_names_at_the_limits_pass(url: str) -> None:
    assert checked_url(url, allow_private=False) == url


def _sendable(url: str) -> bool:
    """Whether the send path takes ``url``'s host: httpx builds the request (encoding an IDNA
    name, decoding an xn-- one for the Host header), and the resolver's ``idna`` codec takes
    the name it sends (``socket.getaddrinfo`` encodes a str host with it), which is not empty
    and which DNS holds to 253 characters."""
    try:
        request = httpx.Request("POST", url)
        name = request.url.raw_host.decode("ascii")
        name.encode("idna")
    except (httpx.InvalidURL, UnicodeError):
        return False
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return len(name.removesuffix(".")) <= 253
    return True


labels = st.one_of(
    st.text(alphabet="aZ09-_üßΣ☃", max_size=6),
    st.integers(58, 68).map(lambda n: "h" * n),
    st.integers(52, 60).map(lambda n: "a" * n + "é"),  # about 63 once encoded
    st.sampled_from(["xn--bcher-kva", "xn--abc", "256", "1"]),
)


@given(parts=st.lists(labels, min_size=1, max_size=6), final_dot=st.booleans())
@example(parts=["h" * 64, "com"], final_dot=False)
@example(parts=["h" * 63] * 3 + ["h" * 62], final_dot=False)
@example(parts=["a" * 56 + "é", "com"], final_dot=False)
def test_a_name_is_accepted_exactly_when_it_can_be_sent_to(
    parts: list[str], final_dot: bool
) -> None:
    host = ".".join(parts) + ("." if final_dot else "")
    url = f"https://{host}/hook"
    try:
        checked_url(url, allow_private=True)
    except InvalidParameter as refused:
        assert refused.code == "url_not_allowed"
        assert not _sendable(url), refused.detail
    else:
        assert _sendable(url)


def test_a_name_saved_before_the_check_is_refused_when_sent() -> None:
    """A URL stored before names were checked fails its send with the guard's refusal (which
    the senders record), not with the resolver's ``UnicodeError``."""
    with pytest.raises(InvalidParameter) as caught:
        resolved(f"{LONG_LABEL}.example.com", 443, allow_private=True)
    assert caught.value.code == "url_not_allowed"

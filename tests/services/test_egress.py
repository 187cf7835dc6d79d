"""The SSRF guard: which URLs the service may send to."""

from __future__ import annotations

import pytest

from audiences.errors import InvalidParameter
from audiences.services.egress import check_resolved, checked_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.1.2.3/",
        "http://192.168.0.7/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://localhost:9000/",
        "http://db.internal/",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "https://user:secret@example.com/",
        "https:///no-host",
        "http://example.com:99999/",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_refused_urls_name_the_code(url: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        checked_url(url, allow_private=False)
    assert caught.value.code == "url_not_allowed"


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://93.184.216.34:8080/x"])
def test_public_urls_pass_unchanged(url: str) -> None:
    assert checked_url(url, allow_private=False) == url


def test_the_operator_may_allow_private_receivers() -> None:
    url = "http://127.0.0.1:8080/hook"
    assert checked_url(url, allow_private=True) == url
    with pytest.raises(InvalidParameter):
        checked_url("ftp://127.0.0.1/", allow_private=True)


def test_a_name_that_resolves_to_loopback_is_refused_before_connecting() -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_resolved("localhost", 80)
    assert "loopback" in str(caught.value)

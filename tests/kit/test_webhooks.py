"""Standard Webhooks signing against two oracles: the scheme written here from the spec, and
the ``standardwebhooks`` reference library."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audiences.kit import webhooks
from tests.webhook_receiver import spec_signatures, spec_verify

secrets = st.binary(min_size=24, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)
ids = st.from_regex(r"msg_[A-Za-z0-9]{1,40}", fullmatch=True)
bodies = st.binary(max_size=2000)


@given(secret=secrets, msg_id=ids, timestamp=st.integers(0, 2**40), body=bodies)
def test_signature_is_the_specs(secret: str, msg_id: str, timestamp: int, body: bytes) -> None:
    """Ours equals the spec's construction for any secret, id, time and body."""
    assert webhooks.signature(secret, msg_id, timestamp, body) == spec_signatures(
        secret, msg_id, str(timestamp), body
    )


@given(
    old=secrets,
    new=secrets,
    msg_id=ids,
    body=st.text(max_size=500).map(str.encode),
)
def test_headers_verify_with_either_secret_in_both_oracles(
    old: str, new: str, msg_id: str, body: bytes
) -> None:
    """Headers signed with two secrets (a rotation) verify with each of them, by the spec's
    scheme and by the reference library; a third secret verifies nothing."""
    now = int(time.time())
    headers = webhooks.headers([new, old], msg_id, now, body)
    for secret in (new, old):
        assert spec_verify(secret, headers, body)
        Webhook(secret).verify(body, headers, json_parse=False)
    stranger = webhooks.new_secret()
    assert not spec_verify(stranger, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers, json_parse=False)


@given(secret=secrets, msg_id=ids, body=bodies, flip=st.integers(0, 1999))
def test_a_changed_body_does_not_verify(secret: str, msg_id: str, body: bytes, flip: int) -> None:
    """Flipping any byte of the body breaks the signature."""
    if not body:
        return
    headers = webhooks.headers([secret], msg_id, 1_700_000_000, body)
    index = flip % len(body)
    tampered = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
    assert not spec_verify(secret, headers, tampered)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "whsec_",
        "secret_abc",
        "whsec_" + base64.b64encode(bytes(23)).decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        "whsec_@@@@",
    ],
)
def test_bad_secrets_are_refused(bad: str) -> None:
    """A secret must be whsec_ and the base64 of 24 to 64 bytes."""
    with pytest.raises(webhooks.BadSecret):
        webhooks.secret_key(bad)


def test_new_secrets_are_random_and_well_formed() -> None:
    """Each new secret is fresh and decodes to 32 bytes."""
    made = {webhooks.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(webhooks.secret_key(secret)) == 32 for secret in made)

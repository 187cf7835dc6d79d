"""Standard Webhooks signing (https://www.standardwebhooks.com, spec version 1.0.0): secrets
``whsec_<base64>``, and ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
"""The spec asks for at least 24 random bytes (192 bits); we accept up to 64."""
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class BadSecret(ValueError):
    """A secret that is not ``whsec_`` and the base64 of 24 to 64 bytes."""


def new_secret() -> str:
    """A fresh random secret in the spec's serialization.

    >>> s = new_secret(); s.startswith("whsec_") and len(secret_key(s)) == 32
    True
    """
    return PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the base64-decoded part after the prefix);
    :class:`BadSecret` when it is not one.

    >>> secret_key("whsec_" + base64.b64encode(bytes(24)).decode()) == bytes(24)
    True
    """
    if not secret.startswith(PREFIX):
        raise BadSecret("a secret starts with whsec_")
    encoded = secret[len(PREFIX) :]
    if not _BASE64.match(encoded):
        raise BadSecret("after whsec_ a secret is base64")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadSecret("after whsec_ a secret is base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise BadSecret(f"a secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,`` signature of a message: HMAC-SHA256 over ``id.timestamp.body``.

    >>> signature("whsec_" + base64.b64encode(bytes(24)).decode(), "msg_1", 1, b"{}")[:3]
    'v1,'
    """
    # Fed in two parts: joining them would copy the whole body (100 KB) once more.
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    digest = mac.digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three ``webhook-`` headers; ``webhook-signature`` holds one signature per secret,
    space-delimited (rotation: the receiver accepts any that verifies)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets),
    }

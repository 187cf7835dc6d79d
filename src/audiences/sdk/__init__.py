"""The Python SDK: ``Client`` and ``AsyncClient`` for an Audiences server.

Installed without the server's dependencies (``pip install audiences``); its models are the
server's own wire schemas (:mod:`audiences.schemas`), and its exceptions the server's error
classes carrying the problem details that came back::

    from audiences.sdk import Client
    with Client("http://127.0.0.1:8000", key="aud_…") as client:
        for member in client.audiences.members("0193…"):
            print(member.id)

See docs/sdk.md.
"""

from audiences.sdk._call import UNSET
from audiences.sdk._http import Retry
from audiences.sdk.client import AsyncClient, Client
from audiences.sdk.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    RateLimited,
    RequestTimeout,
    RuleError,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    Unreachable,
    UnsupportedMediaType,
    ValidationFailed,
)
from audiences.sdk.paging import AsyncPager, Pager

__all__ = [
    "UNSET",
    "ApiError",
    "AsyncClient",
    "AsyncPager",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidParameter",
    "MethodNotAllowed",
    "NotFound",
    "Pager",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "RateLimited",
    "RequestTimeout",
    "Retry",
    "RuleError",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "Unreachable",
    "UnsupportedMediaType",
    "ValidationFailed",
]

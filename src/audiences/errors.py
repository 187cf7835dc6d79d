"""The error tree: every failure a client can see, with a stable code and an HTTP status.

Services raise these; the API renders them as RFC 9457 problem details and the SDK maps
problems back to the same classes, so ``except NotFound`` works on both sides.

    AudiencesError                      500 internal_error
    ├── BadRequest                      400 bad_request
    │   └── InvalidParameter            400 invalid_parameter
    ├── Unauthorized                    401 unauthorized
    ├── Forbidden                       403 forbidden
    ├── NotFound                        404 not_found
    ├── MethodNotAllowed                405 method_not_allowed
    ├── RequestTimeout                  408 request_timeout
    ├── Conflict                        409 conflict
    ├── PreconditionFailed              412 precondition_failed
    ├── PayloadTooLarge                 413 payload_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type
    ├── Unprocessable                   422 unprocessable
    │   ├── ValidationFailed            422 validation_failed
    │   └── RuleError                   422 rule_invalid
    ├── PreconditionRequired            428 precondition_required
    ├── RateLimited                     429 rate_limited
    └── ServiceUnavailable              503 service_unavailable

A raise may override ``code`` with a more specific stable code (``duplicate_key``,
``has_dependents``): the class fixes the status, the code names the exact cause.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ErrorDetail:
    """One problem inside an error: a field that failed validation or a spot in a rule.

    ``location`` names the field as a path (``("body", "labels", 2)``); ``start`` and ``end``
    are character offsets into the rule text, ``line`` and ``col`` are 1-based.
    """

    code: str
    message: str
    location: tuple[str | int, ...] = ()
    start: int | None = None
    end: int | None = None
    line: int | None = None
    col: int | None = None
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of this detail, leaving out what is unknown."""
        data = asdict(self)
        data["location"] = list(self.location)
        return {key: value for key, value in data.items() if value not in (None, [])}


class AudiencesError(Exception):
    """Base of every error the product reports to a client."""

    status: ClassVar[int] = 500
    code: str = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.errors = list(errors or [])
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(AudiencesError):
    """The request cannot be understood: malformed JSON, a garbage cursor."""

    status = 400
    code = "bad_request"
    title = "Bad request"


class InvalidParameter(BadRequest):
    """A query parameter names something unknown or holds a value out of its domain."""

    code = "invalid_parameter"
    title = "Invalid parameter"


class Unauthorized(AudiencesError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(AudiencesError):
    """The key is valid but its role does not allow this operation."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(AudiencesError):
    """No such resource in the caller's workspace (another workspace's resource included)."""

    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(AudiencesError):
    """The resource exists but does not support this HTTP method."""

    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class RequestTimeout(AudiencesError):
    """The request's body stopped arriving before it was complete."""

    status = 408
    code = "request_timeout"
    title = "Request timeout"


class Conflict(AudiencesError):
    """The request conflicts with current state: a duplicate key, dependents, a retry."""

    status = 409
    code = "conflict"
    title = "Conflict"


class PreconditionFailed(AudiencesError):
    """``If-Match`` named a version that is no longer current."""

    status = 412
    code = "precondition_failed"
    title = "Precondition failed"


class PayloadTooLarge(AudiencesError):
    """The body, or a list inside it, is over a documented limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(AudiencesError):
    """The body's content type is not one this operation accepts."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class Unprocessable(AudiencesError):
    """The request is well-formed but its content is not acceptable."""

    status = 422
    code = "unprocessable"
    title = "Unprocessable content"


class ValidationFailed(Unprocessable):
    """Fields of the body or query failed validation; ``errors`` lists each one."""

    code = "validation_failed"
    title = "Validation failed"


class SyncFailed(Unprocessable):
    """An external audience's sync could not produce a member set: ``code`` names why
    (``sync_fetch_failed``, ``sync_timeout``, ``sync_too_large``, ``sync_file_invalid`` …).
    A sync job records it (a failed run, the sync state ``failed``) rather than answering a
    request with it; were it to reach a client it reads as the 422 it is. Every raise names
    its own code, so the class's ``sync_failed`` is never sent."""

    code = "sync_failed"
    title = "Sync failed"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)

    @property
    def message(self) -> str:
        """What went wrong, in words (the ``detail``)."""
        return self.detail


class RuleError(Unprocessable):
    """A rule failed to parse or validate; ``errors`` lists every problem with its position."""

    code = "rule_invalid"
    title = "Invalid rule"


class PreconditionRequired(AudiencesError):
    """The operation requires a precondition header the request did not send."""

    status = 428
    code = "precondition_required"
    title = "Precondition required"


class RateLimited(AudiencesError):
    """The key sent more requests than its rate limit allows; retry after ``Retry-After``."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ServiceUnavailable(AudiencesError):
    """A dependency (database, engine) is not ready."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


ALL_ERRORS: tuple[type[AudiencesError], ...] = (
    AudiencesError,
    BadRequest,
    InvalidParameter,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    ValidationFailed,
    RuleError,
    PreconditionRequired,
    RateLimited,
    ServiceUnavailable,
)

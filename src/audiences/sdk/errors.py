"""The SDK's exceptions: the server's error classes, carrying the problem details that came back.

Each class here subclasses both :class:`ApiError` and the matching class of
:mod:`audiences.errors`, so ``except audiences.errors.NotFound`` and ``except sdk.NotFound``
both work::

    AudiencesError (audiences.errors)
    ├── ApiError                 any problem answer: .problem, .code, .errors, .request_id
    │   ├── BadRequest, InvalidParameter, Unauthorized, Forbidden, NotFound,
    │   │   MethodNotAllowed, RequestTimeout, Conflict, PreconditionFailed,
    │   │   PayloadTooLarge, UnsupportedMediaType, Unprocessable, ValidationFailed,
    │   │   RuleError, PreconditionRequired, RateLimited, ServiceUnavailable, ServerError
    └── Unreachable              no answer: connection refused, reset or timed out (after retries)
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from audiences import errors
from audiences.errors import AudiencesError, ErrorDetail
from audiences.schemas.common import Problem, ProblemItem


class ApiError(AudiencesError):
    """The server answered with a problem (RFC 9457): its ``code``, ``errors``, ``request_id``."""

    def __init__(self, problem: Problem, response: httpx.Response) -> None:
        super().__init__(
            problem.detail,
            code=problem.code,
            errors=[_detail(item) for item in problem.errors],
            headers=dict(response.headers),
        )
        self.problem = problem
        self.request_id = problem.request_id
        self.http_status = response.status_code
        self.response = response

    def __str__(self) -> str:
        return f"{self.detail} ({self.code}, HTTP {self.http_status}, request {self.request_id})"


class Unreachable(AudiencesError):
    """No answer from the server: it is down, the URL is wrong, or it was too slow."""

    status = 503
    code = "unreachable"
    title = "Server unreachable"


class BadRequest(errors.BadRequest, ApiError):
    """400: the request cannot be understood (a garbage cursor, malformed JSON)."""


class InvalidParameter(errors.InvalidParameter, BadRequest):
    """400: a query parameter names something unknown or holds a bad value."""


class Unauthorized(errors.Unauthorized, ApiError):
    """401: no API key, or an unknown or revoked one."""


class Forbidden(errors.Forbidden, ApiError):
    """403: the key's role does not allow this."""


class NotFound(errors.NotFound, ApiError):
    """404: no such resource in the key's workspace."""


class MethodNotAllowed(errors.MethodNotAllowed, ApiError):
    """405: the path does not take this method."""


class RequestTimeout(errors.RequestTimeout, ApiError):
    """408: the body stopped arriving (retried)."""


class Conflict(errors.Conflict, ApiError):
    """409: a duplicate key, dependents, a finished job, a request still in flight."""


class PreconditionFailed(errors.PreconditionFailed, ApiError):
    """412: ``If-Match`` named a version that is no longer current."""


class PayloadTooLarge(errors.PayloadTooLarge, ApiError):
    """413: the body or a list in it is over a limit."""


class UnsupportedMediaType(errors.UnsupportedMediaType, ApiError):
    """415: the content type is not one the operation takes."""


class Unprocessable(errors.Unprocessable, ApiError):
    """422: well-formed but not acceptable."""


class ValidationFailed(errors.ValidationFailed, Unprocessable):
    """422: fields failed validation; ``errors`` lists each."""


class RuleError(errors.RuleError, Unprocessable):
    """422: a rule failed to parse or validate; ``errors`` has every problem and position."""


class PreconditionRequired(errors.PreconditionRequired, ApiError):
    """428: the server requires ``If-Match``."""


class RateLimited(errors.RateLimited, ApiError):
    """429: too many requests, or a write backlog that is full (retried after Retry-After)."""


class ServiceUnavailable(errors.ServiceUnavailable, ApiError):
    """503: the server or a dependency is not ready (retried)."""


class ServerError(ApiError):
    """500 and any other 5xx: the server failed (retried when the call cannot apply twice)."""

    code = "internal_error"


BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
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
        PreconditionRequired,
        RateLimited,
        ServiceUnavailable,
    )
}
BY_STATUS[500] = ServerError
"""The class of a problem by its HTTP status; :data:`BY_CODE` refines it."""
BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls for cls in (InvalidParameter, ValidationFailed, RuleError)
}
"""Codes whose class is a subclass of the status's own."""


def problem_of(response: httpx.Response) -> Problem:
    """The problem details of an error response; one made up when the body is not one (a
    proxy's HTML page), so callers always get a code."""
    try:
        return Problem.model_validate_json(response.content)
    except ValidationError:
        return Problem(
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=response.text[:200] or response.reason_phrase or "error",
            code=f"http_{response.status_code}",
            request_id=response.headers.get("x-request-id", ""),
        )


def error_for(response: httpx.Response) -> ApiError:
    """The exception that an error response stands for."""
    problem = problem_of(response)
    fallback = ServerError if response.is_server_error else ApiError
    cls = BY_CODE.get(problem.code) or BY_STATUS.get(response.status_code, fallback)
    return cls(problem, response)


def _detail(item: ProblemItem) -> ErrorDetail:
    return ErrorDetail(
        code=item.code,
        message=item.message,
        location=tuple(item.location or ()),
        start=item.start,
        end=item.end,
        line=item.line,
        col=item.col,
        suggestion=item.suggestion,
    )

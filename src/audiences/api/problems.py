"""RFC 9457 problem details: one JSON shape for every error, with a stable ``code``.

Every error the service can produce ends here: our own :class:`AudiencesError` tree, FastAPI's
request validation, Starlette's 404 and 405, and anything unexpected (a 500 that never shows a
stack trace).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from audiences import errors
from audiences.api.paths import shown
from audiences.errors import AudiencesError, ErrorDetail
from audiences.kit.logs import get_logger
from audiences.schemas.common import Problem
from audiences.services.validation import located_failures

PROBLEM_JSON = "application/problem+json"
log = get_logger("audiences.api")

NAME_PARAMETERS = {
    "sort": "unknown_sort_field",
    "fields": "unknown_fields",
    "include": "unknown_include",
}
"""Query parameters that name fields: a name the list does not have answers 400, not 422."""

STATUS_ERRORS: dict[int, type[AudiencesError]] = {
    cls.status: cls
    for cls in (
        errors.BadRequest,
        errors.Unauthorized,
        errors.Forbidden,
        errors.NotFound,
        errors.MethodNotAllowed,
        errors.RequestTimeout,
        errors.Conflict,
        errors.PreconditionFailed,
        errors.PayloadTooLarge,
        errors.UnsupportedMediaType,
        errors.Unprocessable,
        errors.PreconditionRequired,
        errors.RateLimited,
        errors.ServiceUnavailable,
    )
}


def request_id_of(request: Request) -> str:
    """The id the request-id middleware gave this request."""
    return str(getattr(request.state, "request_id", "") or "unknown")


def problem_body(
    error: AudiencesError, request_id: str, instance: str | None = None
) -> dict[str, Any]:
    """The JSON body of a problem response for ``error``."""
    body: dict[str, Any] = {
        **error.extra,
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "request_id": request_id,
        "errors": [item.to_dict() for item in error.errors],
    }
    if instance is not None:
        body["instance"] = instance
    return body


def problem_response(error: AudiencesError, request: Request) -> JSONResponse:
    """A ``application/problem+json`` response for ``error``."""
    body = problem_body(error, request_id_of(request), instance=shown(request.url.path))
    return JSONResponse(
        body, status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON
    )


async def _on_audiences_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AudiencesError)
    return problem_response(exc, request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(_validation_problem(list(exc.errors())), request)


def _validation_problem(items: list[Any]) -> AudiencesError:
    if any(item.get("type") == "json_invalid" for item in items):
        return errors.BadRequest("the body is not valid JSON", code="malformed_json")
    misnamed = [item for item in items if _query_location(item) in NAME_PARAMETERS]
    if misnamed:
        parameter = str(_query_location(misnamed[0]))
        code = NAME_PARAMETERS[parameter]
        return errors.InvalidParameter(
            f"{parameter}={misnamed[0].get('input')!r} names something this resource does not have",
            code=code,
            errors=[ErrorDetail(code, str(misnamed[0].get("msg")), ("query", parameter))],
        )
    unknown = [str(item["loc"][-1]) for item in items if _is_unknown_query_parameter(item)]
    if unknown:
        return errors.InvalidParameter(
            f"unknown query parameter {', '.join(unknown)}",
            code="unknown_parameter",
            errors=[
                ErrorDetail("unknown_parameter", f"unknown parameter {n!r}", ("query", n))
                for n in unknown
            ],
        )
    return located_failures(
        [
            (tuple(item.get("loc", ())), str(item.get("type", "invalid")), str(item.get("msg")))
            for item in items
        ]
    )


def _query_location(item: Any) -> str | None:
    location = item.get("loc", ())
    if (
        item.get("type") == "string_pattern_mismatch"
        and len(location) == 2
        and location[0] == "query"
    ):
        return str(location[1])
    return None


def _is_unknown_query_parameter(item: Any) -> bool:
    location = item.get("loc", ())
    return item.get("type") == "extra_forbidden" and len(location) >= 2 and location[0] == "query"


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cls = STATUS_ERRORS.get(exc.status_code, AudiencesError)
    detail = exc.detail if isinstance(exc.detail, str) else cls.title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {shown(request.url.path)}"
    error = cls(detail, headers=dict(exc.headers or {}))
    if exc.status_code == 405:
        error.headers["Allow"] = ", ".join(_allowed_methods(request))
    if exc.status_code == 413:
        error.code = "body_too_large"
    return problem_response(error, request)


HTTP_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")
"""The methods operations use. HEAD is not one: FastAPI's routes do not answer it."""


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path takes. Starlette names only the methods of the
    first route that matched the path, while FastAPI makes a route per method, so each method
    is tried against the routes."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(errors.AudiencesError("an unexpected error occurred"), request)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem response."""
    app.add_exception_handler(AudiencesError, _on_audiences_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring a problem body for each status."""
    return {
        status: {
            "description": STATUS_ERRORS[status].title,
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def document_errors(operation: dict[str, Any]) -> None:
    """Make an OpenAPI operation declare its errors as problems, 400, 422 and 500 included.

    FastAPI adds its own 422 schema to any operation with parameters; ours replaces it, since
    :func:`_on_validation_error` answers with a problem.
    """
    declared = operation.setdefault("responses", {})
    declared.setdefault("400", {})  # every operation refuses a query parameter it does not have
    if operation.get("parameters") or operation.get("requestBody"):
        declared.setdefault("422", {})
    if operation.get("requestBody"):
        for status in ("400", "413", "415"):
            declared.setdefault(status, {})
    declared.setdefault("500", {})
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for status, response in declared.items():
        if status.isdigit() and int(status) >= 400:
            response["description"] = STATUS_ERRORS.get(int(status), AudiencesError).title
            response["content"] = content

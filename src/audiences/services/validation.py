"""Turning pydantic validation errors into our :class:`ValidationFailed` with located details."""

from __future__ import annotations

from pydantic import ValidationError

from audiences.errors import ErrorDetail, ValidationFailed
from audiences.schemas.common import FIELD_CODES, specific_code


def validation_failed(
    exc: ValidationError, *, prefix: tuple[str | int, ...] = ()
) -> ValidationFailed:
    """A :class:`ValidationFailed` listing every problem pydantic found."""
    return located_failures(
        [
            (prefix + tuple(e["loc"]), str(e["type"]), str(e["msg"]))
            for e in exc.errors(include_url=False)
        ]
    )


def located_failures(failures: list[tuple[tuple[str | int, ...], str, str]]) -> ValidationFailed:
    """The error for validation ``failures`` (location, pydantic type, message): code
    ``validation_failed``, or a field's own code (``limit_out_of_range``) when every failure
    is that one."""
    details = [
        ErrorDetail(code=specific_code(location, kind) or kind, message=message, location=location)
        for location, kind, message in failures
    ]
    codes = {detail.code for detail in details}
    code = codes.pop() if len(codes) == 1 and codes <= set(FIELD_CODES.values()) else None
    return ValidationFailed(f"{len(details)} field(s) failed validation", code=code, errors=details)


def invalid_field(field: str | tuple[str, ...], code: str, message: str) -> ValidationFailed:
    """A 422 for one body field (``field`` or a path to it) with its own stable ``code``."""
    location = ("body", *((field,) if isinstance(field, str) else field))
    return ValidationFailed(message, code=code, errors=[ErrorDetail(code, message, location)])

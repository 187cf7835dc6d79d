"""Turning pydantic validation errors into our :class:`ValidationFailed` with located details."""

from __future__ import annotations

from pydantic import ValidationError

from audiences.errors import ErrorDetail, ValidationFailed


def validation_failed(
    exc: ValidationError, *, prefix: tuple[str | int, ...] = ()
) -> ValidationFailed:
    """A :class:`ValidationFailed` listing every problem pydantic found."""
    details = [
        ErrorDetail(
            code=str(error["type"]),
            message=str(error["msg"]),
            location=prefix + tuple(error["loc"]),
        )
        for error in exc.errors(include_url=False)
    ]
    return ValidationFailed(f"{len(details)} field(s) failed validation", errors=details)

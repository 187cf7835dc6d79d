"""Workspace settings: how the workspace treats what its writes send."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StrictBool

from audiences.schemas.common import InputModel


class WorkspaceSettings(BaseModel):
    """The settings of the caller's workspace (``GET /v1/workspace/settings``)."""

    strict_attributes: bool = Field(
        description=(
            "False (the default): an undeclared attribute is declared from its first value"
            " with a clear type. True: nothing is inferred, and a record naming an undeclared"
            " attribute is refused (`attribute_undeclared`)."
        )
    )
    event_retention_days: int | None = Field(
        default=None,
        description=(
            "Events older than this many days are dropped (an hourly job); null keeps them forever."
        ),
    )


def _json_number(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


Days = Annotated[int, Field(ge=1, le=36_500), BeforeValidator(_json_number)]
"""Days as a JSON integer (``30`` or ``30.0``, as JSON Schema's ``integer`` allows; not
``"30"``), 1 to 36,500."""


class WorkspaceSettingsUpdate(InputModel):
    """The body of ``PUT /v1/workspace/settings``: every setting, replaced."""

    strict_attributes: StrictBool = Field(
        description='`true` or `false` (JSON booleans only: 1 or "yes" are refused).'
    )
    event_retention_days: Days | None = Field(
        default=None,
        description="Keep events this many days (1 to 36,500); null or left out: forever.",
    )

"""API key request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from audiences.schemas.common import (
    InputModel,
    ListFilter,
    ListParams,
    enum_values,
    names_pattern,
    sort_pattern,
    sparse_model,
)
from audiences.schemas.enums import Role as Role

ROLE_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}


class ApiKeyCreate(InputModel):
    """A new key's name and role."""

    name: str = Field(min_length=1, max_length=200)
    role: Role


class ApiKey(BaseModel):
    """A key as listed: never the token, only its prefix for recognition."""

    id: str
    name: str
    role: Role
    prefix: str = Field(description="The token's first characters, to tell keys apart.")
    workspace: str = Field(description="The slug of the key's workspace.")
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    """The answer to creating a key: the only time the token is shown."""

    token: str


API_KEY_SORTS = ("name", "created_at", "id")


class ApiKeyListParams(ListParams):
    """Query parameters of the key list: the common ones plus a role filter."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(API_KEY_SORTS),
        description="One of " + ", ".join(API_KEY_SORTS) + "; `-` for descending.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(ApiKey.model_fields))
    include: str | None = Field(default=None, pattern="^$", description="Nothing to include.")
    role: Annotated[list[str] | None, ListFilter(enum_values(Role))] = Field(
        default=None, description="With this role. Several: repeat it or use commas."
    )


ApiKeyListItem = sparse_model(ApiKey, "ApiKeyListItem")
"""A apikey in a list: every field present unless ``fields=`` asks for fewer."""

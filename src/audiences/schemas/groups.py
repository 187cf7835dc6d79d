"""Audience group request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field

from audiences.schemas.common import (
    InputModel,
    ListFilter,
    ListParams,
    Relationship,
    names_pattern,
    sort_pattern,
    sparse_model,
)


class GroupWrite(InputModel):
    """The writable fields of a group: the body of POST and PUT, and what PATCH edits."""

    name: str = Field(min_length=1, max_length=200, description="Unique in the workspace.")
    description: str | None = Field(default=None, max_length=5000)


class Group(GroupWrite):
    """An audience group as the API returns it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    audience_count: int
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    updated_by: str | None = None
    audiences: list[Relationship] | None = Field(
        default=None, description="With `include=audiences` only."
    )


GROUP_SORTS = ("name", "created_at", "updated_at", "id")
FREE_TEXT = r"^[\s\S]{1,5000}$"
GROUP_INCLUDES = ("audiences",)


class GroupListParams(ListParams):
    """Query parameters of the group list: the common ones plus name and description filters."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(GROUP_SORTS),
        description="One of " + ", ".join(GROUP_SORTS) + "; `-` for descending.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Group.model_fields))
    include: str | None = Field(default=None, pattern=names_pattern(GROUP_INCLUDES))
    name: Annotated[list[str] | None, ListFilter(FREE_TEXT, commas=False)] = Field(
        default=None, description="Exactly this name. Several: repeat it."
    )
    description: Annotated[list[str] | None, ListFilter(FREE_TEXT, commas=False)] = Field(
        default=None, description="Exactly this description. Several: repeat it."
    )


GroupListItem = sparse_model(Group, "GroupListItem")
"""A group in a list: every field present unless ``fields=`` asks for fewer."""

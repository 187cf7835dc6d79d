"""Profile attribute types: the vocabulary shared by the rule language and the profile engines."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from audiences.schemas.enums import AttributeType as AttributeType

AttributeSchema = Mapping[str, AttributeType]
"""Attribute name (dotted for nested paths, e.g. ``address.country``) to its type."""


class Attribute(BaseModel):
    """One declared profile attribute."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$", max_length=128)
    type: AttributeType
    description: str | None = Field(default=None, max_length=1000)


ATTRIBUTE_NAME = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
MAX_ATTRIBUTES = 500
"""Most attributes one workspace may declare (each is a column of its profile table)."""


class AttributeDeclare(BaseModel):
    """The body of ``PUT /v1/attributes/{name}``: the attribute's type and what it means."""

    model_config = ConfigDict(extra="forbid")

    type: AttributeType
    description: str | None = Field(default=None, max_length=1000)


class AttributeOut(BaseModel):
    """A declared or inferred attribute as the API returns it."""

    name: str
    type: AttributeType
    description: str | None = None
    inferred: bool = Field(
        description="True when the type was inferred from the first values seen."
    )
    created_at: datetime

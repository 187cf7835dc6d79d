"""Profile attribute types: the vocabulary shared by the rule language and the profile engines."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class AttributeType(StrEnum):
    """The type of one profile attribute, as declared or inferred on first ingest."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    STRING_LIST = "string_list"
    NUMBER_LIST = "number_list"
    JSON = "json"


AttributeSchema = Mapping[str, AttributeType]
"""Attribute name (dotted for nested paths, e.g. ``address.country``) to its type."""


class Attribute(BaseModel):
    """One declared profile attribute."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$", max_length=128)
    type: AttributeType
    description: str | None = Field(default=None, max_length=1000)

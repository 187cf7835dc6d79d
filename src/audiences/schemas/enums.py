"""The wire contract's plain enumerations, apart from the models: the command line builds its
options from them (``--type``, ``--role``) without importing pydantic, so that ``audiences
--help`` starts fast. Their modules re-export them (``schemas.attributes.AttributeType``)."""

from __future__ import annotations

from enum import StrEnum


class AttributeType(StrEnum):
    """The type of one profile attribute, as declared or inferred from its first value."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    STRING_LIST = "string_list"
    NUMBER_LIST = "number_list"
    JSON = "json"


class Role(StrEnum):
    """What a key may do: read; read and write; and admin, which also manages keys."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

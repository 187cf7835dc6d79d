"""Shapes every resource shares: list pages, list queries, problem details, relationships."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, Union

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    SkipValidation,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypeAliasType

T = TypeVar("T")
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Every resource id: what path parameters and the ``id`` filter accept."""
MAX_PAGE_SIZE = 200
"""The largest page any list serves; ``AUDIENCES_PAGE_SIZE_MAX`` may lower it, not raise it."""


def _json_integer(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number, not text or a boolean")
    return value


JSON_INTEGER = BeforeValidator(_json_integer)
"""Put last in ``Annotated[int, Field(...), JSON_INTEGER]``: an integer as JSON Schema means
it, ``30`` or ``30.0`` but never ``"30"`` or ``true`` (after the constraints, so that they still
show in the JSON schema)."""


FIELD_CODES: dict[tuple[str, str], str] = {
    ("limit", "less_than_equal"): "limit_out_of_range",
    ("interval_seconds", "greater_than_equal"): "refresh_interval_too_short",
}
"""Validation failures with a stable code of their own (docs/errors.md), by the field's name
and pydantic's error type: a page size over the maximum, a refresh interval under the floor."""


def specific_code(location: tuple[str | int, ...], kind: str) -> str | None:
    """The code of :data:`FIELD_CODES` for a failure of ``kind`` at ``location``, if any."""
    return FIELD_CODES.get((str(location[-1]), kind)) if location else None


def reject_nul(value: Any) -> None:
    """Raise ``ValueError`` if any string inside ``value`` (keys included) holds a NUL character.

    PostgreSQL text cannot store NUL, and no legitimate name, rule or label needs one, so input
    is refused with 422 up front instead of failing deep inside the database.

    Plain JSON data is checked on its orjson encoding, where a NUL can only appear as the
    escape ``\\u0000``: one C-speed pass instead of a Python call per value (a 10,000-profile
    batch holds about 450,000 values). Only when that text shows up (or the data is not plain
    JSON) are the values walked one by one, since a string may hold those six characters.

    >>> reject_nul({"a": ["ok", {"b" + chr(0): 1}]})
    Traceback (most recent call last):
    ...
    ValueError: text may not contain NUL characters
    """
    try:
        if b"\\u0000" not in orjson.dumps(value):
            return
    except TypeError:
        pass  # not plain JSON data (a non-string key, some other object)
    _walk_for_nul(value)


def _walk_for_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_for_nul(key)
            _walk_for_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk_for_nul(item)


STORABLE_NUMBERS = (-(2**63), 2**64 - 1)
"""The smallest and largest number a JSON column keeps as given: the integers orjson, its
encoder, writes (floats beyond them are refused too, so that the OpenAPI schema, which cannot
tell ``1e300`` from an integer, says exactly what is accepted)."""


def storable_json(value: T) -> T:
    """``value`` unchanged; ``ValueError`` (422) if its JSON encoder cannot write it as given:
    a number outside :data:`STORABLE_NUMBERS`, a lone surrogate, nesting over 255 levels, or
    NaN and infinity (which it would write as null). For free-form JSON kept in a JSON column
    (an audience's metadata, small), which would otherwise fail at the insert or change."""
    try:
        orjson.dumps(value)
    except TypeError as error:  # orjson.JSONEncodeError is one
        raise ValueError(f"cannot be stored as JSON: {error}") from None
    if _unstorable_float(value):
        raise ValueError(
            "cannot be stored as JSON: NaN and infinity are not JSON numbers, and numbers"
            " must lie between -2^63 and 2^64 - 1"
        )
    return value


def _unstorable_float(value: Any) -> bool:
    if isinstance(value, float):
        low, high = STORABLE_NUMBERS
        return not (math.isfinite(value) and low <= value <= high)
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_unstorable_float(item) for item in value)


def _storable_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
    return storable_json(value)


# The OpenAPI document carries bounds as floats, which 2^64 - 1 is not: 2^64 (exclusive) is.
_NUMBER_SCHEMA = {
    "type": "number",
    "minimum": STORABLE_NUMBERS[0],
    "exclusiveMaximum": STORABLE_NUMBERS[1] + 1,
}

if TYPE_CHECKING:  # mypy cannot follow a recursive TypeAliasType
    StorableJsonObject = dict[str, Any]
else:
    StorableJsonValue = TypeAliasType(
        "StorableJsonValue",
        Union[  # noqa: UP007 (a recursive alias needs the names as strings)
            dict[str, "StorableJsonValue"],
            list["StorableJsonValue"],
            str,
            bool,
            Annotated[float, WithJsonSchema(_NUMBER_SCHEMA)],
            None,
        ],
    )
    """The JSON schema of a value :func:`storable_json` accepts (what OpenAPI can say of it: not
    the nesting limit, nor lone surrogates)."""

    StorableJsonObject = Annotated[
        SkipValidation[dict[str, StorableJsonValue]],
        AfterValidator(_storable_object),
        PlainSerializer(lambda value: value),
    ]
    """A JSON object kept as given in a JSON column, checked by :func:`storable_json` alone (the
    type only gives it its JSON schema: validating by it would turn integers into floats)."""


class InputModel(BaseModel):
    """Base of every request body and query model: unknown fields refused, no NUL characters."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        reject_nul(data)
        return data


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, whether more follow, and the cursor to ask for them."""

    data: list[T]
    has_more: bool
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last."
    )
    total: int = Field(description="Items matching the filters, across all pages.")


class ProblemItem(BaseModel):
    """One field or rule problem inside an error response."""

    code: str
    message: str
    location: list[str | int] | None = None
    start: int | None = None
    end: int | None = None
    line: int | None = None
    col: int | None = None
    suggestion: str | None = None


RULE_WARNINGS = (
    "Problems that leave the rule valid, in the shape of a problem's `errors[]` items: "
    "`rule_unknown_event` for an event name no event has had yet (with a did-you-mean), "
    "located at `rule` with positions in its canonical text; current as of this answer."
)
"""What an answer's ``warnings`` field says (audiences and previews)."""


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable ``code`` and the ``request_id`` to quote."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable snake_case error code; see docs/errors.md.")
    request_id: str
    instance: str | None = None
    errors: list[ProblemItem] = Field(default_factory=list)


class Relationship(BaseModel):
    """The slim shape of a related resource inside ``include=``."""

    id: str
    name: str
    key: str | None = None


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
"""An RFC 3339 date-time (``2024-05-01T12:00:00Z``); a bare number or a time without an
offset is not one."""


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2024-05-01T12:00:00Z")
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time")
    return value


def _in_range(value: datetime) -> datetime:
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the first year in UTC
            raise ValueError("must be a time between the years 1 and 9999 in UTC") from None
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_range)]
"""A time in a query: RFC 3339 text only (pydantic alone would also take ``0.5`` as a Unix
time), whose instant falls within the years 1 to 9999 in UTC (compared with stored times,
which are UTC)."""

MAX_FILTER_VALUES = 100
"""Values one filter may name (repeated and comma-separated ones together)."""


@dataclass(frozen=True)
class ListFilter:
    """Metadata of a list filter, ``Annotated[list[str] | None, ListFilter(pattern)]``: the
    parameter repeated or (when ``commas``) a comma list, meaning any of the values (OR).
    ``pattern`` (anchored) is what one value may be; at most :data:`MAX_FILTER_VALUES` in all.
    The contract declares the comma list; the repeated form is accepted too.

    Filters on free text (a name, a description) take ``commas=False``: a name may hold a
    comma, so there several values come only from repeating the parameter.
    """

    pattern: str
    commas: bool = True

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        value = re.compile(self.pattern)

        def check(values: list[str] | None) -> list[str] | None:
            if values is None:
                return None
            if self.commas:
                values = [part for item in values for part in item.split(",")]
            if len(values) > MAX_FILTER_VALUES:
                raise ValueError(f"at most {MAX_FILTER_VALUES} values")
            bad = [item for item in values if not value.match(item)]
            if bad:
                raise ValueError(f"{bad[0]!r} does not match {self.pattern}")
            return values

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: Any, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        # Declared as one string (a comma list): the repeated form is accepted as well, but an
        # array parameter would let a client send `true` for an id and expect a refusal.
        described: dict[str, Any] = handler(schema)
        single = self.pattern.removeprefix("^").removesuffix("$")
        more = MAX_FILTER_VALUES - 1
        pattern = rf"^({single})(,({single})){{0,{more}}}$" if self.commas else self.pattern
        kept = {k: v for k, v in described.items() if k not in ("type", "items", "anyOf")}
        return {**kept, "type": "string", "pattern": pattern}


def enum_values(values: Iterable[str]) -> str:
    """An anchored regex for one of ``values`` (a filter on an enumerated field)."""
    return rf"^({_alternatives(values)})$"


@dataclass
class ListQuery:
    """A parsed list request: paging, order, filters, search, and response shaping."""

    limit: int
    cursor: str | None = None
    offset: int | None = None
    sort: str | None = None
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    q: str | None = None
    updated_since: datetime | None = None
    fields: frozenset[str] | None = None
    include: frozenset[str] = frozenset()


@dataclass
class PageResult(Generic[T]):
    """What a service returns for a list: rows of one page and how to continue."""

    items: list[T]
    has_more: bool
    next_cursor: str | None
    total: int
    extra: dict[str, Any] = field(default_factory=dict)


class ListParams(InputModel):
    """The query parameters every list accepts. Unknown parameters answer 400 naming them."""

    limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PAGE_SIZE,
        description="Items per page: default 50, at most 200 (422 above).",
    )
    cursor: str | None = Field(
        default=None, max_length=2000, description="`next_cursor` of the previous page."
    )
    offset: int | None = Field(
        default=None, ge=0, le=1_000_000, description="Skip this many items (not with `cursor`)."
    )
    sort: str | None = Field(
        default=None,
        max_length=64,
        description="A sortable field, `-field` for descending. Ties are broken by id.",
    )
    q: str | None = Field(
        default=None, max_length=200, description="Case-insensitive search in name and description."
    )
    updated_since: Rfc3339 | None = Field(
        default=None, description="Only items updated at or after this time (RFC 3339)."
    )
    fields: str | None = Field(
        default=None, max_length=1000, description="Comma-separated fields to return (id always)."
    )
    include: str | None = Field(
        default=None, max_length=200, description="Comma-separated related resources to embed."
    )
    id: Annotated[list[str] | None, ListFilter(ID_PATTERN)] = Field(
        default=None, description="Only these ids (repeat it, or separate ids with commas)."
    )


def _alternatives(names: Iterable[str]) -> str:
    return "|".join(sorted((re.escape(name) for name in names), key=len, reverse=True))


def names_pattern(names: Iterable[str]) -> str:
    """A regex for a comma-separated list of ``names`` (``fields=``, ``include=``).

    >>> bool(re.match(names_pattern(["id", "name"]), "name,id"))
    True
    """
    alternatives = _alternatives(names)
    return rf"^({alternatives})(,({alternatives}))*$"


def sort_pattern(names: Iterable[str]) -> str:
    """A regex for ``sort=``: one of ``names``, optionally prefixed by ``-`` for descending.

    >>> bool(re.match(sort_pattern(["name"]), "-name")), bool(re.match(sort_pattern(["name"]), "x"))
    (True, False)
    """
    return rf"^-?({_alternatives(names)})$"


def sparse_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """``model`` with no field required: the shape of list items, which ``fields=`` may trim."""
    definitions: dict[str, Any] = {
        field_name: (info.annotation, Field(default=None, description=info.description))
        for field_name, info in model.model_fields.items()
    }
    sparse: type[BaseModel] = create_model(name, __doc__=model.__doc__, **definitions)
    return sparse


def page_of(item: type[BaseModel]) -> type[BaseModel]:
    """``Page[item]`` for an item model built at run time (mypy cannot take those as types)."""
    page: type[BaseModel] = Page[item]  # type: ignore[valid-type]
    return page

"""NUL characters are refused wherever they hide in input, and only there."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audiences.schemas.common import reject_nul, storable_json

# Text drawn so that NUL, other control characters and the escape's own characters
# (backslash, "u", "0") are common.
CHARACTERS = ["\x00", "\x01", "\\", "u", "0", "a", "é", '"']
TEXT = st.text(alphabet=st.sampled_from(CHARACTERS), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON_DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


@given(JSON_DATA)
def test_refused_exactly_when_some_string_holds_a_nul(value: Any) -> None:
    if _has_nul(value):
        with pytest.raises(ValueError, match="NUL"):
            reject_nul(value)
    else:
        reject_nul(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "\x00"},  # a key orjson cannot encode: the values are walked instead
        [2**70, "a\x00"],  # an integer orjson cannot encode
        ("tuple", ("nested\x00",)),
    ],
)
def test_data_orjson_cannot_encode_is_still_checked(value: Any) -> None:
    with pytest.raises(ValueError, match="NUL"):
        reject_nul(value)


def test_the_escape_spelled_out_is_not_a_nul() -> None:
    reject_nul({"rule": "name = '\\u0000'"})


EDGES = [-(2**63) - 1, -(2**63), 2**64 - 1, 2**64, -1e19, 1.8e19, 1.9e19, "\udfff", "a"]


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [number for item in items for number in _floats(item)]


def _in_range(number: float) -> bool:
    return -(2**63) <= number <= 2**64 - 1


@given(JSON_DATA | st.lists(st.sampled_from(EDGES)))
def test_storable_json_refuses_exactly_what_orjson_cannot_encode_as_given(value: Any) -> None:
    """As given: orjson writes infinity as null (JSON_DATA draws infinities); and floats beyond
    the integers it writes, which OpenAPI could not tell from such integers, are refused too."""
    try:
        same = orjson.loads(orjson.dumps(value)) == value
    except TypeError:
        same = False
    if same and all(_in_range(number) for number in _floats(value)):
        assert storable_json(value) is value
    else:
        with pytest.raises(ValueError, match="cannot be stored as JSON"):
            storable_json(value)


@given(
    st.recursive(
        st.floats() | st.sampled_from([-(2.0**63), 2.0**63, 1.8e19, 2.0**64]),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=8,
    )
)
def test_storable_json_refuses_nan_infinity_and_huge_floats_wherever_they_are(value: Any) -> None:
    encoded = orjson.dumps(value)
    # orjson writes NaN and infinity as null
    if b"null" in encoded or not all(_in_range(number) for number in _floats(value)):
        with pytest.raises(ValueError, match="NaN and infinity"):
            storable_json(value)
    else:
        assert storable_json(value) is value


def test_the_integer_range_docs_api_states_is_what_is_stored() -> None:
    for inside in (-(2**63), 2**64 - 1):
        assert storable_json({"n": inside}) == {"n": inside}
    for outside in (-(2**63) - 1, 2**64):
        with pytest.raises(ValueError, match="64-bit"):
            storable_json({"n": outside})

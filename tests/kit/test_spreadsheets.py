"""Defusing spreadsheet formulas: nothing defused starts a formula, and nothing else changes."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

from audiences.kit import spreadsheets
from audiences.kit.spreadsheets import FORMULA_STARTS, defused


@given(st.text(alphabet=st.sampled_from([*FORMULA_STARTS, "'", "a", "1", ","]) | st.characters()))
def test_a_defused_text_never_starts_a_formula_and_keeps_the_text(text: str) -> None:
    result = defused(text)
    assert not result.startswith(FORMULA_STARTS)
    if text[:1] in FORMULA_STARTS:
        assert result == "'" + text
    else:
        assert result == text


def test_docstring_examples() -> None:
    assert doctest.testmod(spreadsheets).failed == 0

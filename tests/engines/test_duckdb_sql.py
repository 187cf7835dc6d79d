"""Names and guards of the DuckDB engine's SQL."""

from __future__ import annotations

import pytest

from audiences.engines.duckdb_sql import checked_condition, quote, table_name
from audiences.errors import Unprocessable


def test_table_names_keep_case_and_dashes_apart() -> None:
    names = [table_name(ws) for ws in ["acme", "Acme", "ACME", "a-b", "a_b", "a_hb", "aB", "a_b_"]]
    assert len({name.lower() for name in names}) == len(names)
    assert table_name("Acme-1") == "profiles__acme_h1"


def test_quote_escapes_quotes() -> None:
    assert quote('a"b') == '"a""b"'


@pytest.mark.parametrize(
    "where_sql",
    ["a = 1 AND list_contains(tags, 'x')", "NOT churned", "country IN (?, ?)", '"a.b" > 2'],
)
def test_single_conditions_pass_unchanged(where_sql: str) -> None:
    assert checked_condition(where_sql) == where_sql


@pytest.mark.parametrize(
    "where_sql",
    ["", "SELECT 1", "a = 1; SELECT 2", "EXISTS (SELECT 1)", "COPY t TO 'x'", "PRAGMA x"],
)
def test_anything_else_is_refused(where_sql: str) -> None:
    with pytest.raises(Unprocessable):
        checked_condition(where_sql)

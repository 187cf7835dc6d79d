"""The catalog's tables of each workspace, as one read of an engine's catalog needs them."""

from __future__ import annotations

import pytest

from audiences.engines.duckdb_sql import events_table_name, table_name
from audiences.engines.schema import catalog_tables
from audiences.errors import InvalidParameter


def test_each_table_names_its_workspace_and_kind() -> None:
    tables = catalog_tables(["ws_1", "Beta-2"], table_name, events_table_name)
    assert tables == {
        table_name("ws_1"): ("ws_1", False),
        events_table_name("ws_1"): ("ws_1", True),
        table_name("Beta-2"): ("Beta-2", False),
        events_table_name("Beta-2"): ("Beta-2", True),
    }


def test_two_workspaces_whose_tables_share_a_name_are_refused() -> None:
    """DuckDB's and ClickHouse's table names escape '-' and 'H' alike (workspace ids the API
    makes are lowercase, so they never meet); a catalog read must not mix two workspaces."""
    assert table_name("a-b") == table_name("aHb")
    with pytest.raises(ValueError, match="share"):
        catalog_tables(["a-b", "aHb"], table_name, events_table_name)


def test_an_id_that_cannot_name_a_table_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        catalog_tables(["no spaces"], table_name, events_table_name)

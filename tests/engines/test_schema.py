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
    """A catalog read must not mix two workspaces, whatever names the tables: here a naming
    that folds case, as DuckDB's matching of names does (``table_name`` escapes case, so its
    names never meet: tests/engines/test_duckdb_sql.py)."""
    with pytest.raises(ValueError, match="share"):
        catalog_tables(["a-b", "A-B"], lambda ws: table_name(ws.lower()), events_table_name)
    assert len(catalog_tables(["a-b", "aHb"], table_name, events_table_name)) == 4


def test_an_id_that_cannot_name_a_table_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        catalog_tables(["no spaces"], table_name, events_table_name)

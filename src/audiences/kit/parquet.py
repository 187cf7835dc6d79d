"""Rows of a Parquet file as dicts, a batch at a time: DuckDB reads the file, in constant memory.

Values come as Python values in UTC: a timestamp without a zone is taken as UTC (Parquet's
convention for ``TIMESTAMP``), decimals become floats, and nulls are left out of the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb


class ParquetUnreadable(ValueError):
    """The file is not Parquet DuckDB can read; the message says why, in words."""


def column_names(path: Path) -> list[str]:
    """The file's columns, in order; ``ParquetUnreadable`` when it is not Parquet."""
    with _connection() as con:
        try:
            described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)])
            return [str(row[0]) for row in described.fetchall()]
        except duckdb.Error:
            raise ParquetUnreadable("the file is not a readable Parquet file") from None


def rows(path: Path, *, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Every row of the file as a dict of its non-null values, in file order."""
    with _connection() as con:
        result = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        names = [str(column[0]) for column in result.description or []]
        while fetched := result.fetchmany(batch):
            for row in fetched:
                yield {
                    name: _plain(value)
                    for name, value in zip(names, row, strict=True)
                    if value is not None
                }


def _connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _plain(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, Decimal):
        return float(value)
    return value

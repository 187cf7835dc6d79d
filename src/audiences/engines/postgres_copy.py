"""Rows and pids through PostgreSQL's ``COPY``: merged rows into temporary tables, member
sets in and selected pids out in the binary format, straight between numpy buffers and the
wire (no Python object per pid)."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import postgres_sql as sql
from audiences.engines.base import pids_to_bitmap

Connection = psycopg.Connection[Any]

COPY_HEADER = 19
"""Bytes before the first row of ``COPY ... (FORMAT binary)``: signature, flags, extension
length (PostgreSQL writes no extension)."""

PID_ROWS = np.dtype([("fields", ">i2"), ("length", ">i4"), ("pid", ">i8")])
"""One row of a binary COPY of one bigint column."""


def copy_rows(
    conn: Connection, table: str, staged: str, rows: list[tuple[Any, ...]], names: list[str]
) -> None:
    """Copy merged rows into a temporary table shaped like ``table`` (gone at commit)."""
    conn.execute(f"DROP TABLE IF EXISTS {staged}")
    conn.execute(f"CREATE TEMP TABLE {staged} (LIKE {table}) ON COMMIT DROP")
    with conn.cursor().copy(f"COPY {staged} ({sql.write_columns(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def stage_members(conn: Connection, alias: str, members: AbstractBitMap) -> None:
    """A temporary table of pids named ``alias``, written as binary COPY from a numpy buffer."""
    conn.execute(f"CREATE TEMP TABLE {sql.quote(alias)} (pid bigint) ON COMMIT DROP")
    pids = np.asarray(members.to_array(), dtype=np.int64)
    rows = np.empty(len(pids), dtype=PID_ROWS)
    rows["fields"], rows["length"], rows["pid"] = 1, 8, pids
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    with conn.cursor().copy(f"COPY {sql.quote(alias)} (pid) FROM STDIN (FORMAT binary)") as copy:
        copy.write(header + rows.tobytes() + b"\xff\xff")
    conn.execute(f"ANALYZE {sql.quote(alias)}")


def copy_pids(conn: Connection, query: str) -> BitMap:
    """The pids a query selects (one bigint column), read as binary COPY into a bitmap."""
    chunks: list[bytes] = []
    with conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
        chunks.extend(bytes(block) for block in copy)
    data = b"".join(chunks)
    body = data[COPY_HEADER:-2] if len(data) > COPY_HEADER + 2 else b""
    return pids_to_bitmap(np.frombuffer(body, dtype=PID_ROWS)["pid"])

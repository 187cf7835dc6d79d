"""Bulk transfer with PostgreSQL: merged rows and member sets in through ``COPY`` (member sets
in the binary format, from a numpy buffer), selected pids out as packed ``bytea`` read by
numpy: no Python object per pid either way."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import postgres_sql as sql
from audiences.engines.base import pids_to_bitmap

Connection = psycopg.Connection[Any]

PIDS_PER_READ = 1 << 26
"""Pids read in one ``bytea`` at most (8 bytes each: 512 MB, under PostgreSQL's 1 GB)."""

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


def selected_pids(conn: Connection, query: str, last_pid: int) -> BitMap:
    """The pids a query selects (one bigint column ``pid``) as a bitmap.

    PostgreSQL packs them into one ``bytea`` (``int8send`` of each, aggregated) which numpy
    reads in place: no Python object per pid. Measured at 1M pids on PostgreSQL 15: about
    0.45 s, against 0.68 s for fetching the rows as Python ints and 2.2 s for a binary
    ``COPY TO STDOUT`` (psycopg hands that over one row at a time). A ``bytea`` holds at most
    1 GB, so beyond :data:`PIDS_PER_READ` pids (``last_pid``, the largest drawn) the query is
    read in ranges of pids.
    """
    cur = conn.cursor(binary=True)
    parts: list[bytes] = []
    for low in range(0, last_pid + 1 if last_pid >= PIDS_PER_READ else 1, PIDS_PER_READ):
        ranged = (
            f" WHERE pid >= {low} AND pid < {low + PIDS_PER_READ}"
            if low or last_pid >= PIDS_PER_READ
            else ""
        )
        row = cur.execute(
            f"SELECT string_agg(int8send(pid), ''::bytea) FROM ({query}) AS s{ranged}"
        ).fetchone()
        if row is not None and row[0] is not None:
            parts.append(bytes(row[0]))
    return pids_to_bitmap(np.frombuffer(b"".join(parts), dtype=">i8"))

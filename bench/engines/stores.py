"""Each engine of the benchmark on fresh storage, and its hand-written baseline.

DuckDB gets a temporary folder, PostgreSQL a uniquely named schema (dropped at the end: the
server is shared), ClickHouse a chdb temporary folder. The baseline runs the hand-written
conditions (``predicates.HAND_WRITTEN``) against the engine's real tables and fetches the pids
the way a person would with that engine's Python client, into pyroaring bitmaps.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyroaring import BitMap

from audiences.engines.base import ProfileEngine, pids_to_bitmap
from bench.engines.predicates import HAND_WRITTEN

KINDS = ("duckdb", "postgres", "clickhouse")
POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

Baseline = Callable[[], dict[str, BitMap]]
Baselines = Callable[[str], dict[str, Baseline]]
"""A workspace id -> the hand-written baselines on its table, by label."""


@dataclass
class Store:
    """An engine under test, its version line, its folder (for the metadata database) and
    its hand-written baselines."""

    engine: ProfileEngine
    version: str
    folder: Path
    baselines: Baselines


def available(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or None when it can."""
    try:
        if kind == "postgres":
            import psycopg

            psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
        elif kind == "clickhouse":
            import chdb  # noqa: F401
    except Exception as error:  # any failure: skip it, and say why
        return f"{type(error).__name__}: {error}"
    return None


@contextmanager
def opened(kind: str, data_dir: Path | None) -> Iterator[Store]:
    """``kind``'s engine on fresh storage, removed when the block ends."""
    with tempfile.TemporaryDirectory(dir=data_dir) as folder:
        if kind == "duckdb":
            yield from _duckdb(Path(folder))
        elif kind == "postgres":
            yield from _postgres(Path(folder))
        elif kind == "clickhouse":
            yield from _clickhouse(Path(folder))
        else:
            raise ValueError(f"unknown engine {kind!r}")


def _duckdb(folder: Path) -> Iterator[Store]:
    import duckdb

    from audiences.engines.duckdb import DuckDBEngine
    from audiences.engines.duckdb_sql import quote, table_name

    engine = DuckDBEngine(folder / "profiles")
    con = duckdb.connect(str(engine.path))
    con.execute("SET TimeZone = 'UTC'")

    def baselines(ws: str) -> dict[str, Baseline]:
        table = quote(table_name(ws))

        def fetchnumpy() -> dict[str, BitMap]:
            out = {}
            for key, where in HAND_WRITTEN["duckdb"].items():
                pids = con.execute(f"SELECT pid FROM {table} WHERE {where}").fetchnumpy()["pid"]
                out[key] = pids_to_bitmap(pids)
            return out

        return {"fetchnumpy": fetchnumpy}

    try:
        yield Store(engine, f"duckdb {duckdb.__version__}", folder, baselines)
    finally:
        con.close()
        engine.close()


def _postgres(folder: Path) -> Iterator[Store]:
    import psycopg

    from audiences.engines.postgres import PostgresEngine

    schema = f"bench_{uuid.uuid4().hex}"
    engine = PostgresEngine(POSTGRES_URL, schema=schema)
    conn = psycopg.connect(POSTGRES_URL, autocommit=True)

    def baselines(ws: str) -> dict[str, Baseline]:
        row = conn.execute(  # the workspace's table, as the registry names it
            f'SELECT number FROM "{schema}".workspaces WHERE workspace_id = %s', [ws]
        ).fetchone()
        assert row is not None
        table = f'"{schema}".profiles_{row[0]}'

        def fetchall() -> dict[str, BitMap]:
            out = {}
            for key, where in HAND_WRITTEN["postgres"].items():
                rows = conn.execute(f"SELECT pid FROM {table} WHERE {where}").fetchall()
                pids = np.fromiter((r[0] for r in rows), np.uint32, len(rows))
                out[key] = pids_to_bitmap(pids)
            return out

        return {"fetchall": fetchall}

    version = conn.execute("SHOW server_version").fetchone()
    try:
        yield Store(
            engine,
            f"PostgreSQL {version[0] if version else '?'}, psycopg {psycopg.__version__}",
            folder,
            baselines,
        )
    finally:
        engine.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def _clickhouse(folder: Path) -> Iterator[Store]:
    import chdb

    from audiences.engines import clickhouse_sql as sql
    from audiences.engines.clickhouse import ClickHouseEngine
    from audiences.engines.clickhouse_client import ChdbClient
    from audiences.engines.duckdb_sql import table_name

    client = ChdbClient(folder / "clickhouse")
    engine = ClickHouseEngine(client)
    where = HAND_WRITTEN["clickhouse"]

    def baselines(ws: str) -> dict[str, Baseline]:
        table = sql.table("audiences", table_name(ws))

        def rowbinary() -> dict[str, BitMap]:  # a UInt32 column in RowBinary is a numpy buffer
            return {
                key: pids_to_bitmap(
                    np.frombuffer(
                        client.query(f"SELECT pid FROM {table} FINAL WHERE {w}", "RowBinary"),
                        dtype="<u4",
                    )
                )
                for key, w in where.items()
            }

        def bitmap_state() -> dict[str, BitMap]:  # ClickHouse's own Roaring bitmap, serialized
            return {
                key: sql.read_bitmap(
                    client.query(
                        f"SELECT groupBitmapState(pid) FROM {table} FINAL WHERE {w}", "RowBinary"
                    )
                )
                for key, w in where.items()
            }

        return {"RowBinary into numpy": rowbinary, "groupBitmapState": bitmap_state}

    try:
        yield Store(
            engine,
            f"chdb {chdb.__version__} (ClickHouse {chdb.engine_version})",
            folder,
            baselines,
        )
    finally:
        engine.close()

"""How ClickHouse in process (chdb) should hand members back: every read path of the same 20
hand-written conditions, in interleaved rounds, wall and CPU time (CPU counts chdb's threads,
which run in this process).

    .venv/bin/python -m bench.engines.reads                    # 1M profiles, 9 rounds
    .venv/bin/python -m bench.engines.reads --profiles 300000 --rounds 5

Paths: the ``UInt32`` pid column in ``RowBinary`` read by numpy (what the engine does in
process), the same with chdb's result buffer read in place (``get_memview``, one copy fewer),
as a pyarrow table (``arrowtable``), and ``groupBitmapState`` (ClickHouse builds the Roaring
bitmap, pyroaring deserializes it; what the engine does with a server); each also with
``max_threads = 1``. Ours (``select_many`` of the compiled rules) runs beside them. Every path
must return the same members.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from pyroaring import BitMap

from audiences.engines import clickhouse_sql as sql
from audiences.engines.base import pids_to_bitmap
from audiences.engines.clickhouse import ClickHouseEngine
from audiences.engines.duckdb_sql import table_name
from audiences.services.evaluation import compiled
from bench.engines import stores
from bench.engines.predicates import HAND_WRITTEN, RULES
from bench.engines.service import Service
from bench.engines.workload import NOW, SCHEMA, generate, load, load_average

Read = Callable[[], dict[str, BitMap]]


def main(argv: list[str] | None = None) -> None:
    """Load the profiles into chdb, time every read path, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args(argv)
    columns = generate(args.profiles, args.seed)
    with stores.opened("clickhouse", None) as store:
        engine = store.engine
        assert isinstance(engine, ClickHouseEngine)
        service = Service(engine, store.folder, SCHEMA, RULES)
        try:
            load(engine, service.workspace_id, columns, args.profiles, 10_000)
            paths = read_paths(engine, service.workspace_id)
            print(f"{args.profiles:,} profiles, load average before: {load_average()}")
            timings = rounds(paths, args.rounds)
            print(f"Load average after: {load_average()}\n")
        finally:
            service.close()
    print("| path | wall best, s | wall median, s | CPU best, s | CPU median, s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, (wall, cpu) in timings.items():
        print(
            f"| {label} | {min(wall):.3f} | {statistics.median(wall):.3f}"
            f" | {min(cpu):.3f} | {statistics.median(cpu):.3f} |"
        )


def read_paths(engine: ClickHouseEngine, ws: str) -> dict[str, Read]:
    """Every read path of the 20 conditions, by label."""
    client = engine._client  # the bench reads chdb's own results: a private, on purpose
    con = client._con  # type: ignore[attr-defined]
    table = sql.table("audiences", table_name(ws))
    where = HAND_WRITTEN["clickhouse"]
    schema = compiled.frozen_schema(SCHEMA)
    ours = {
        key: compiled.to_engine_sql(compiled.bound_rule(text, schema), engine.dialect, {}, now=NOW)
        for key, text in RULES.items()
    }

    def query(select: str, w: str, one: bool) -> str:
        return f"SELECT {select} FROM {table} FINAL WHERE {w}" + (
            " SETTINGS max_threads = 1" if one else ""
        )

    def column(one: bool) -> Read:
        return lambda: {
            k: pids_to_bitmap(np.frombuffer(client.query(query("pid", w, one), "RowBinary"), "<u4"))
            for k, w in where.items()
        }

    def state(one: bool) -> Read:
        return lambda: {
            k: sql.read_bitmap(client.query(query("groupBitmapState(pid)", w, one), "RowBinary"))
            for k, w in where.items()
        }

    def in_place() -> dict[str, BitMap]:
        out = {}
        for k, w in where.items():
            result = con.query(query("pid", w, False), "RowBinary")
            out[k] = pids_to_bitmap(np.frombuffer(result.get_memview().view(), "<u4"))
        return out

    def arrow() -> dict[str, BitMap]:
        return {
            k: pids_to_bitmap(con.query(query("pid", w, False), "arrowtable").column(0).to_numpy())
            for k, w in where.items()
        }

    paths: dict[str, Read] = {
        "ours: select_many (pid column, RowBinary)": lambda: engine.select_many(ws, ours),
        "pid column, RowBinary into numpy": column(False),
        "pid column, RowBinary read in place (get_memview)": in_place,
        "pid column, arrowtable": arrow,
        "groupBitmapState": state(False),
        "pid column, max_threads = 1": column(True),
        "groupBitmapState, max_threads = 1": state(True),
    }
    reference = paths["groupBitmapState"]()
    for label, run in paths.items():
        got = run()
        assert all(got[key] == reference[key] for key in RULES), f"{label} disagrees"
    return paths


def rounds(paths: dict[str, Read], count: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds of each path in each of ``count`` rounds, taking turns."""
    out: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in paths}
    for _ in range(count):
        for label, run in paths.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            out[label][0].append(time.perf_counter() - wall)
            out[label][1].append(time.process_time() - cpu)
    return out


if __name__ == "__main__":
    main()

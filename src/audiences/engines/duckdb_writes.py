"""Writes in the DuckDB engine: a workspace's storage, its profiles merged, its pids given out,
and the id index that finds a profile's row by external id.

The engine (:mod:`audiences.engines.duckdb`) holds the lock and the writer cursor; these
functions run on the cursor it hands them, under that lock. The id index is the engine's
cache, never a second truth: it names candidate pids for a hash, confirmed in SQL, and learns a
new profile only once the row is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from audiences.engines import duckdb_sql as sql
from audiences.engines import portable
from audiences.engines.base import RESERVED_COLUMNS, Profile
from audiences.engines.duckdb_streaming_copy import StreamingCopy
from audiences.engines.idindex import AMBIGUOUS, IdIndex
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import extra_moves
from audiences.engines.seen_ids import SeenIds
from audiences.engines.writes import WritePlan, merge_row
from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS

Cursor = duckdb.DuckDBPyConnection

MAX_PID = 2**32 - 1


@dataclass
class Workspace:
    """What the engine keeps about one workspace; ``schema`` is replaced, never mutated."""

    table: str
    sequence: str
    schema: dict[str, AttributeType]
    events: str = ""
    event_schema: dict[str, AttributeType] = field(default_factory=dict)
    index: IdIndex | None = None
    copy: StreamingCopy | None = None
    seen: SeenIds | None = None


@dataclass(frozen=True)
class Stored:
    """Where a profile's row is: its pid and DuckDB's ``rowid``."""

    pid: int
    rowid: int


def load(cur: Cursor, workspace_id: str, create: bool) -> Workspace | None:
    """The workspace's state read from its tables, made first (with ``create``) or whichever
    is missing; None when it has no table and none is to be made."""
    name = sql.table_name(workspace_id)
    columns = _columns(cur, name)
    if not columns and not create:
        return None
    state = Workspace(sql.quote(name), sql.quote("pids_" + name.removeprefix("profiles_")), {})
    state.events = sql.quote(sql.events_table_name(workspace_id))
    create_storage(cur, state)
    state.schema = {
        column: sql.ATTRIBUTE_TYPES[kind]
        for column, kind in columns
        if column not in RESERVED_COLUMNS
    }
    state.event_schema = {
        column: sql.ATTRIBUTE_TYPES[kind]
        for column, kind in _columns(cur, sql.events_table_name(workspace_id))
        if column not in RESERVED_EVENT_FIELDS
    }
    return state


def _columns(cur: Cursor, table: str) -> list[tuple[str, str]]:
    """A table's columns and types, none when it does not exist. ``pragma_table_info``
    looks the one table up; ``duckdb_columns()`` lists every table's columns first, which
    made opening each workspace cost in proportion to how many there are (400 tables:
    3.7 ms a lookup against 0.4 ms)."""
    try:
        return cur.execute(
            "SELECT name, type FROM pragma_table_info(?) ORDER BY cid",
            [f"main.{sql.quote(table)}"],
        ).fetchall()
    except duckdb.CatalogException:
        return []


def create_storage(cur: Cursor, state: Workspace) -> None:
    """The workspace's tables (profiles, events) and pid sequence, made together and
    whichever is missing (files written before events existed get their events table).

    Both come in one transaction; a file written by a process killed between the two
    statements (as this engine once ran them) has the table alone, and gets its sequence
    here, starting after every pid the table holds.
    """
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute(sql.create_table(state.table))
        row = cur.execute(f"SELECT coalesce(max(pid), 0) + 1 FROM {state.table}").fetchone()
        start = int(row[0]) if row else 1
        cur.execute(f"CREATE SEQUENCE IF NOT EXISTS {state.sequence} START {start}")
        cur.execute(sql.create_events_table(state.events))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def last_pid(cur: Cursor, state: Workspace) -> int:
    """The larger of the sequence's last pid and the table's (under the lock)."""
    name = state.sequence.strip('"')
    row = cur.execute(
        "SELECT coalesce(last_value, start_value - 1) FROM duckdb_sequences()"
        " WHERE schema_name = 'main' AND sequence_name = ?",
        [name],
    ).fetchone()
    top = cur.execute(f"SELECT coalesce(max(pid), 0) FROM {state.table}").fetchone()
    return max(int(row[0]) if row else 0, int(top[0]) if top else 0)


def index(cur: Cursor, state: Workspace) -> IdIndex:
    """The workspace's id index, built from the table when it has none."""
    if state.index is None:
        query = f"SELECT hash(external_id) AS h, pid FROM {state.table}"
        arrays = cur.execute(query).fetchnumpy()
        state.index = IdIndex(np.asarray(arrays["h"]), np.asarray(arrays["pid"], np.int64))
    return state.index


def _hashes(cur: Cursor, external_ids: list[str]) -> dict[str, int]:
    query = "SELECT list_transform(?::VARCHAR[], lambda x: hash(x))"
    row = cur.execute(query, [external_ids]).fetchone()
    return dict(zip(external_ids, row[0] if row else [], strict=True))


def resolve(
    cur: Cursor, state: Workspace, external_ids: list[str]
) -> tuple[dict[str, int], dict[str, Stored]]:
    """Hash each id, and confirm in SQL the stored row of each id that has one."""
    hashes, rows = _stored_rows(cur, state, external_ids, "external_id, pid, rowid")
    return hashes, {eid: Stored(pid, rowid) for eid, pid, rowid in rows}


def _stored_rows(
    cur: Cursor, state: Workspace, external_ids: list[str], columns: str
) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    """Each id's hash, and ``columns`` of the stored row of each id that has one (the
    columns must start with ``external_id``, which confirms the index's candidate)."""
    hashes = _hashes(cur, external_ids)
    candidates = index(cur, state).lookup(list(hashes.values()))
    by_pid = [pid for pid in candidates if pid > 0]
    exact = [eid for eid, pid in zip(hashes, candidates, strict=True) if pid == AMBIGUOUS]
    select = f"SELECT {columns} FROM {state.table} WHERE"
    if len(by_pid) == 1:
        # One id (every cold read): an equality the scan can skip row groups on, about
        # twice as fast as the semi-join below.
        rows = cur.execute(f"{select} pid = ?", by_pid).fetchall()
    else:
        rows = cur.execute(f"{select} pid IN (SELECT unnest(?::UINTEGER[]))", [by_pid]).fetchall()
    if exact:  # Only for hashes shared by two ids: this scans every external id.
        query = f"{select} external_id IN (SELECT unnest(?::VARCHAR[]))"
        rows += cur.execute(query, [exact]).fetchall()
    wanted = set(external_ids)
    return hashes, [row for row in rows if row[0] in wanted]


def apply_plan(cur: Cursor, state: Workspace, plan: WritePlan) -> dict[int, Profile]:
    """Write a checked plan in one transaction, then teach the index the new ids; the
    profiles as written, by pid.

    The old rows are read once, merged with the writes here, and the merged rows appended
    from one JSON document: joining the old rows inside the INSERT made DuckDB scan every
    column of the table, and returning the rows cost as much again.
    """
    schema = state.schema
    names = list(schema)
    # A column every write names is never read from the old row: NULL in its place spares
    # the scan that column (reading every column of 1M rows tripled this statement).
    named = set(names).intersection(*(write.values for write in plan.writes))
    kept = [sql.quote(name) if name not in named else "NULL" for name in names]
    # updated_at is not read either: the merged row gets now.
    leading = ["pid", "external_id", "extra", "NULL"]
    columns = ", ".join(["external_id", *leading, *kept, "rowid"])
    cur.execute("BEGIN TRANSACTION")
    try:
        hashes, rows = _stored_rows(cur, state, [w.external_id for w in plan.writes], columns)
        old = {row[0]: row[1:-1] for row in rows}
        rowids = {row[0]: row[-1] for row in rows}
        _assign_pids(cur, state, plan, {eid: row[0] for eid, row in old.items()})
        now = utcnow()
        merged = [merge_row(w, old.get(w.external_id), names, now) for w in plan.writes]
        document = sql.rows_document(merged, schema)
        cur.execute(sql.insert_rows(state.table, schema), {"rows": document})
        # Only the rows of ids this batch wrote: never another id's row found by its hash.
        stale = [rowids[w.external_id] for w in plan.writes if w.external_id in rowids]
        if stale:
            cur.execute(f"DELETE FROM {state.table} WHERE rowid IN (SELECT unnest(?))", [stale])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    created = [write for write in plan.writes if write.created]
    index(cur, state).add_many([hashes[w.external_id] for w in created], [w.pid for w in created])
    read = ProfileReader(schema)
    return {row[0]: read(row) for row in merged}


def _assign_pids(cur: Cursor, state: Workspace, plan: WritePlan, stored: dict[str, int]) -> None:
    fresh = [write for write in plan.writes if write.external_id not in stored]
    query = "SELECT nextval(?) AS pid FROM range(?) ORDER BY pid"
    pids = cur.execute(query, [state.sequence, len(fresh)]).fetchnumpy()["pid"].tolist()
    if pids and pids[-1] > MAX_PID:
        raise Conflict("This workspace has used every pid.", code="pids_exhausted")
    for write, pid in zip(fresh, pids, strict=True):
        write.pid, write.created = int(pid), True
    for write in plan.writes:
        if not write.created:
            write.pid = stored[write.external_id]


def create_empty(
    cur: Cursor, state: Workspace, fresh: list[str], hashes: dict[str, int], pids: dict[str, int]
) -> None:
    """Insert an empty profile per id of ``fresh``, put their pids in ``pids``, and teach the
    index them."""
    pids.update(zip(fresh, insert_empty(cur, state, fresh), strict=True))
    index(cur, state).add_many([hashes[eid] for eid in fresh], [pids[eid] for eid in fresh])


def insert_empty(cur: Cursor, state: Workspace, fresh: list[str]) -> list[int]:
    """Insert an empty profile per id (new ids, checked); their pids, in order. The index
    is the caller's to teach, once the rows are committed."""
    if not fresh:
        return []
    query = "SELECT nextval(?) AS pid FROM range(?) ORDER BY pid"
    made = cur.execute(query, [state.sequence, len(fresh)]).fetchnumpy()["pid"]
    if len(made) and int(made[-1]) > MAX_PID:
        raise Conflict("This workspace has used every pid.", code="pids_exhausted")
    pids = [int(pid) for pid in made]
    cur.execute(
        f"INSERT INTO {state.table} (pid, external_id, updated_at)"
        " SELECT unnest(?::UINTEGER[]), unnest(?::VARCHAR[]), ?",
        [pids, fresh, utcnow()],
    )
    return pids


def import_profiles(cur: Cursor, state: Workspace, profiles: Sequence[Profile]) -> int:
    """Append the profiles whose pids are not stored, in one transaction, and move the pid
    sequence past them; the id index is rebuilt when next needed. How many were appended."""
    schema = state.schema
    cur.execute("BEGIN TRANSACTION")
    try:
        query = f"SELECT pid FROM {state.table} WHERE pid IN (SELECT unnest(?::UINTEGER[]))"
        held = {
            row[0] for row in cur.execute(query, [valid_pids([p.pid for p in profiles])]).fetchall()
        }
        rows = [portable.profile_row(p, schema) for p in profiles if p.pid not in held]
        if rows:
            document = sql.rows_document(rows, schema)
            cur.execute(sql.insert_rows(state.table, schema), {"rows": document})
            highest = max(row[0] for row in rows)
            if highest > last_pid(cur, state):
                cur.execute(sql.restart_sequence(state.sequence, highest + 1))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    state.index = None
    return len(rows)


def add_attribute(cur: Cursor, state: Workspace, name: str, kind: AttributeType) -> None:
    """Add the column and move ``extra`` values that fit its type, in one transaction."""
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute(sql.add_column(state.table, name, kind))
        _backfill(cur, state, name, kind)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    state.schema = {**state.schema, name: kind}


def _backfill(cur: Cursor, state: Workspace, name: str, kind: AttributeType) -> None:
    # The value is under its dotted name, or nested in an extra written before nested
    # objects were flattened at ingest: ``{"addr": {"city": …}}`` for ``addr.city``.
    flat = f'$."{name}"'
    nested = "$." + ".".join(f'"{part}"' for part in name.split("."))
    query = (
        f"SELECT pid, extra FROM {state.table} WHERE json_exists(extra, ?) OR json_exists(extra, ?)"
    )
    rows = cur.execute(query, [flat, nested]).fetchall()
    moves = extra_moves(rows, name, kind)
    if moves:
        pids, values, extras = (list(column) for column in zip(*moves, strict=True))
        cur.execute(sql.move_from_extra(state.table, name, kind), [pids, values, extras])


def valid_pids(pids: Sequence[int]) -> list[int]:
    """The pids that can be one (1 to :data:`MAX_PID`), in order."""
    return [pid for pid in pids if 0 < pid <= MAX_PID]

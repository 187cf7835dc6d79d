"""Writes in the PostgreSQL engine: the statements that merge profiles and make pids.

The engine (:mod:`audiences.engines.postgres`) holds the connection, the transaction and its
retries; these functions run inside the transaction it opened. Stored rows are locked in pid
order before they are merged (two writers of overlapping batches queue instead of
deadlocking), new ids are inserted whole with ``ON CONFLICT DO NOTHING`` (an id another
process inserted meanwhile becomes one to merge into), and text PostgreSQL cannot hold (NUL)
fails its record alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from audiences.engines import postgres_sql as sql
from audiences.engines.base import EventResult, Profile, ProfileRecord, UpsertResult
from audiences.engines.event_writes import CheckedEvent
from audiences.engines.postgres_copy import copy_rows
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import extra_moves
from audiences.engines.writes import WritePlan, merge_row
from audiences.errors import Conflict, ErrorDetail
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeType
from audiences.schemas.common import reject_nul

Connection = psycopg.Connection[Any]


@dataclass
class Workspace:
    """What the engine keeps about one workspace; schemas are replaced, never mutated."""

    number: int
    profiles: str
    events: str
    sequence: str
    schema: dict[str, AttributeType] = field(default_factory=dict)
    event_schema: dict[str, AttributeType] = field(default_factory=dict)
    read_at: float = 0.0


def columns(conn: Connection, table: str, reserved: frozenset[str]) -> dict[str, AttributeType]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        [table],
    ).fetchall()
    return {name: sql.ATTRIBUTE_TYPES[kind] for name, kind in rows if name not in reserved}


def apply_plan(conn: Connection, state: Workspace, plan: WritePlan) -> dict[int, Profile]:
    """Write a checked plan: lock the stored rows in pid order, insert the new ids (a
    racing writer's id becomes one to merge into), merge the rest over what is stored.
    The profiles as written, by pid."""
    schema, names = state.schema, list(state.schema)
    by_id = {write.external_id: write for write in plan.writes}
    old = _locked_rows(conn, state, list(by_id))
    now = utcnow()
    new = [write for write in plan.writes if write.external_id not in old]
    inserted: list[tuple[Any, ...]] = []
    if new:
        # Staged with their order where the pid goes; the insert draws the pids in that order.
        staged = [merge_row(write, None, names, now) for write in new]
        staged = [(n, *row[1:]) for n, row in enumerate(staged)]
        created = _insert_new(conn, state, staged, names)
        raced = [w.external_id for w in new if w.external_id not in created]
        old.update(_locked_rows(conn, state, raced))
        for write, row in zip(new, staged, strict=True):
            if write.external_id in created:
                write.pid, write.created = created[write.external_id], True
                inserted.append((write.pid, *row[1:]))
    merged: list[tuple[Any, ...]] = []
    for write in plan.writes:
        if not write.created:
            write.pid = int(old[write.external_id][0])
            merged.append(merge_row(write, old[write.external_id], names, now))
    if merged:
        copy_rows(conn, state.profiles, "_audiences_merged", merged, names)
        conn.execute(sql.update_from(state.profiles, "_audiences_merged", names))
    read = ProfileReader(schema)
    return {row[0]: read(row) for row in [*merged, *inserted]}


def _insert_new(
    conn: Connection, state: Workspace, staged: list[tuple[Any, ...]], names: list[str]
) -> dict[str, int]:
    """Insert new profiles whole (staged rows, their order as pid); the pid of each id this
    call created."""
    copy_rows(conn, state.profiles, "_audiences_new", staged, names)
    query = sql.insert_new(state.profiles, "_audiences_new", state.sequence, names)
    return {eid: int(pid) for eid, pid in _run_numbered(conn, query)}


def ensure(
    conn: Connection, state: Workspace, external_ids: list[str]
) -> tuple[dict[str, int], int]:
    """The pid of each id, inserting an empty profile for the unknown ones (a racing
    writer's insert is read back); and how many this call created."""
    pids = pid_map(conn, state, external_ids)
    fresh = [eid for eid in dict.fromkeys(external_ids) if eid not in pids]
    if not fresh:
        return pids, 0
    query = sql.insert_empty(state.profiles, state.sequence)
    made = dict(_run_numbered(conn, query, [utcnow(), fresh]))
    pids.update(made)
    missing = [eid for eid in fresh if eid not in made]
    if missing:
        pids.update(pid_map(conn, state, missing))
    return pids, len(made)


def backfill(conn: Connection, state: Workspace, name: str, kind: AttributeType) -> None:
    """Move the ``extra`` values a new column can hold into it (nested or dotted)."""
    nested = name.split(".")
    query = (
        f"SELECT pid, extra::text FROM {state.profiles}"
        " WHERE extra ? %s OR (cardinality(%s::text[]) > 1 AND extra #> %s::text[] IS NOT NULL)"
    )
    rows = conn.execute(query, [name, nested, nested]).fetchall()
    moves = extra_moves(rows, name, kind)
    if not moves:
        return
    staged = "_audiences_moves"
    conn.execute(
        f"CREATE TEMP TABLE {staged} (pid bigint, v {sql.COLUMN_TYPES[kind]}, e jsonb)"
        " ON COMMIT DROP"
    )
    with conn.cursor().copy(f"COPY {staged} (pid, v, e) FROM STDIN") as copy:
        for move in moves:
            copy.write_row(move)
    conn.execute(
        f"UPDATE {state.profiles} AS t SET {sql.quote(name)} = s.v, extra = s.e"
        f" FROM {staged} AS s WHERE t.pid = s.pid"
    )
    conn.execute(f"DROP TABLE {staged}")


def _run_numbered(conn: Connection, query: str, params: Sequence[Any] | None = None) -> list[Any]:
    """Run an insert that draws pids, with the sequence's end as our error."""
    try:
        with conn.transaction():
            return conn.execute(query, params).fetchall()
    except pg_errors.SequenceGeneratorLimitExceeded:
        raise Conflict("This workspace has used every pid.", code="pids_exhausted") from None


def pid_map(conn: Connection, state: Workspace, external_ids: list[str]) -> dict[str, int]:
    query = f"SELECT external_id, pid FROM {state.profiles} WHERE external_id = ANY(%s)"
    return {eid: int(pid) for eid, pid in conn.execute(query, [external_ids]).fetchall()}


def _locked_rows(
    conn: Connection, state: Workspace, external_ids: list[str]
) -> dict[str, tuple[Any, ...]]:
    """The stored rows of ``external_ids`` (in :func:`sql.select_columns` order), locked in pid
    order, so that two writers of overlapping batches queue instead of deadlocking."""
    if not external_ids:
        return {}
    query = (
        f"SELECT {sql.select_columns(state.schema)} FROM {state.profiles}"
        " WHERE external_id = ANY(%s) ORDER BY pid FOR UPDATE"
    )
    return {row[1]: row for row in conn.execute(query, [external_ids]).fetchall()}


def without_nul(records: Sequence[ProfileRecord]) -> tuple[list[int], dict[int, UpsertResult]]:
    """The positions of the records PostgreSQL can store, and a refusal for each other one:
    text holding NUL, which no PostgreSQL text or JSON value can hold."""
    clean: list[int] = []
    refused: dict[int, UpsertResult] = {}
    for position, (external_id, attributes) in enumerate(records):
        try:
            reject_nul([external_id, attributes])
        except (ValueError, TypeError):
            problem = ErrorDetail("text_invalid", "text may not contain NUL characters", ())
            refused[position] = UpsertResult(str(external_id), None, errors=(problem,))
        else:
            clean.append(position)
    return clean, refused


def events_without_nul(
    events: list[CheckedEvent],
) -> tuple[list[CheckedEvent], dict[int, EventResult]]:
    kept: list[CheckedEvent] = []
    refused: dict[int, EventResult] = {}
    for event in events:
        try:
            reject_nul([event.external_id, event.name, event.event_id, event.values])
        except (ValueError, TypeError):
            problem = ErrorDetail("text_invalid", "text may not contain NUL characters", ())
            refused[event.position] = EventResult(event.external_id, None, errors=(problem,))
        else:
            kept.append(event)
    return kept, refused


def in_order(
    results: list[UpsertResult], clean: list[int], refused: dict[int, UpsertResult], size: int
) -> list[UpsertResult]:
    """The results of the clean records (in their order) and the refusals, in input order."""
    out: list[UpsertResult | None] = [None] * size
    for position, result in zip(clean, results, strict=True):
        out[position] = result
    for position, result in refused.items():
        out[position] = result
    return [result for result in out if result is not None]

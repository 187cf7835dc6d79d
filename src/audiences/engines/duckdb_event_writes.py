"""Changes to a DuckDB workspace's events, and the caches that follow each one.

A write of events drops duplicates (looked up through the workspace's :class:`SeenIds`),
creates the unknown profiles and appends the events in one transaction; after the commit the
id index learns the new profiles, the seen ids the batch's ids, and the streaming copy
(:mod:`audiences.engines.duckdb_streaming_copy`) the events in its slices, whichever step
fails. Expiry, erasure and a move's import reach the copy too, or drop it.

The engine (:mod:`audiences.engines.duckdb`) holds the lock, the writer cursor and the name of
its database of copies; these functions run under that lock on the cursor it hands them. The
statements on the events table itself are :mod:`audiences.engines.duckdb_events`'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime
from itertools import compress

import duckdb

from audiences.engines import duckdb_events, duckdb_streaming_copy, portable
from audiences.engines import duckdb_sql as sql
from audiences.engines import duckdb_writes as writes
from audiences.engines.base import (
    EventCursor,
    EventRecord,
    EventResult,
    EventSlice,
    MovedEvent,
)
from audiences.engines.duckdb_writes import Cursor, Workspace
from audiences.engines.event_writes import (
    batch_results,
    check_events,
    event_ids,
    external_ids,
    split_duplicates,
)
from audiences.engines.seen_ids import MAX_HELD, HashArray, SeenIds
from audiences.kit.clock import utcnow

log = logging.getLogger("audiences.engines")


def write(
    cur: Cursor,
    copies: str,
    state: Workspace,
    records: Sequence[EventRecord],
    *,
    received_at: datetime | None,
    known_new: frozenset[str],
    dedupe_since: datetime | None,
) -> list[EventResult]:
    """Check the batch, drop duplicates (ids received since ``dedupe_since``: those whose
    hash the workspace's :class:`SeenIds` holds, confirmed in SQL), then in one transaction
    create the unknown profiles and append the events; the id index learns the new
    profiles, and the seen ids the batch's ids, after the commit."""
    passed, refused = check_events(records, state.event_schema)
    # Taken out while the write runs: after a failure it might lack an id stored.
    seen, state.seen = state.seen, None
    cur.execute("BEGIN TRANSACTION")
    try:
        ids = event_ids(passed)
        hashes = duckdb_events.id_hashes(cur, ids) if ids else None
        seen = seen_ids(cur, state, seen, dedupe_since)
        stored = stored_ids(cur, state, seen, ids, hashes, known_new, dedupe_since)
        fresh, duplicates = split_duplicates(passed, stored)
        external = external_ids(fresh, duplicates)
        profile_hashes, found = writes.resolve(cur, state, external)
        pids = {eid: row.pid for eid, row in found.items()}
        new = [eid for eid in external if eid not in pids]
        pids.update(zip(new, writes.insert_empty(cur, state, new), strict=True))
        batch = None
        if fresh:
            batch = duckdb_events.columns(state.event_schema, fresh, pids)
            received = received_at or utcnow()
            duckdb_events.insert(cur, state.events, state.event_schema, batch, received)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    try:  # the committed write reaches every cache, whichever step fails
        if batch is not None:
            follow_copy(cur, copies, state, lambda _: _append_copy(cur, copies, state, batch))
    finally:
        if seen is not None and hashes is not None:
            seen.add(hashes)  # a duplicate's hash again too: harmless
        state.seen = seen
        writes.index(cur, state).add_many(
            [profile_hashes[eid] for eid in new], [pids[eid] for eid in new]
        )
    return batch_results(len(records), refused, fresh, duplicates, pids)


def seen_ids(
    cur: Cursor, state: Workspace, seen: SeenIds | None, since: datetime | None
) -> SeenIds | None:
    """The hashes of the stored ids to look a batch up in (under the lock, in the write's
    transaction): ``seen``, or built now when there is none, it holds ids since a later
    moment than ``since`` or it is stale; None when the window holds more than
    :data:`~audiences.engines.seen_ids.MAX_HELD` events. Without ``since`` (every stored
    id counts) the lookup scans, and ``seen`` is only kept."""
    if since is None or (seen is not None and seen.since <= since and not seen.stale()):
        return seen
    if duckdb_events.received_since(cur, state.events, since) > MAX_HELD:
        return None
    return SeenIds(since, duckdb_events.held_hashes(cur, state.events, since))


def stored_ids(
    cur: Cursor,
    state: Workspace,
    seen: SeenIds | None,
    ids: list[str],
    hashes: HashArray | None,
    known_new: frozenset[str],
    since: datetime | None,
) -> set[str]:
    """Which of ``ids`` (their ``hashes``) are stored, received since ``since``; those in
    ``known_new`` are not looked up. Only the ids whose hash ``seen`` holds are looked up
    in SQL, when it holds the ids since ``since``: usually none, and no scan."""
    if seen is not None and since is not None and hashes is not None:
        ids = list(compress(ids, seen.held(hashes).tolist()))
    if known_new:
        ids = [i for i in ids if i not in known_new]
    if not ids:
        return set()
    return duckdb_events.stored_event_ids(cur, state.events, ids, since)


def drop_before(cur: Cursor, copies: str, state: Workspace, before: datetime) -> int:
    """Delete the workspace's events older than ``before`` (from its streaming copy too);
    how many were deleted."""
    query = f'DELETE FROM {state.events} WHERE "timestamp" < ?'
    row = cur.execute(query, [before]).fetchone()
    follow = 'DELETE FROM {} WHERE "timestamp" < ?'
    follow_copy(cur, copies, state, lambda copy: cur.execute(follow.format(copy), [before]))
    return int(row[0]) if row else 0


def import_moved(
    cur: Cursor,
    copies: str,
    state: Workspace,
    events: Sequence[MovedEvent],
    after: EventCursor | None,
) -> int:
    """Append the events of a batch the table does not hold yet, in one transaction; the
    seen ids and the streaming copy are dropped (built again when next needed)."""
    schema = state.event_schema
    state.seen = None  # it would lack the ids moved in: built again when next needed
    cur.execute("BEGIN TRANSACTION")
    try:
        row = cur.execute(sql.last_event_cursor(state.events)).fetchone()
        held = EventCursor(int(row[0]), int(row[1])) if row else None
        fresh = portable.left_to_write(events, after, held)
        if fresh:
            rows = [portable.event_row(moved, schema) for moved in fresh]
            document = sql.columns_document(rows, [*sql.EVENT_KINDS, *schema.values()])
            cur.execute(sql.insert_events(state.events, schema), {"rows": document})
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    if fresh:
        forget_copy(cur, copies, state)
    return len(fresh)


def copy_for(
    cur: Cursor, copies: str, state: Workspace, slices: Sequence[EventSlice]
) -> str | None:
    """The table of the workspace's streaming copy, (re)built when it does not serve
    ``slices`` and pruned when due; None when the events table is to be read (no copy is
    kept of these slices, or building one failed). Under the lock."""
    copy = state.copy
    if copy is not None and copy.serves(slices, list(state.event_schema)):
        follow_copy(
            cur,
            copies,
            state,
            lambda _: duckdb_streaming_copy.prune(cur, copy, slices, state.events),
        )
        return state.copy.table if state.copy else None
    state.copy = None  # until the new one stands
    try:
        state.copy = duckdb_streaming_copy.build(
            cur, copies, state.events, state.event_schema, slices
        )
    except duckdb.Error:  # read the table, and try again only after a while
        log.warning("no streaming copy of %s: building it failed", state.events, exc_info=True)
        state.copy = duckdb_streaming_copy.no_copy(slices, state.event_schema)
    return state.copy.table


def _append_copy(cur: Cursor, copies: str, state: Workspace, batch: duckdb_events.Columns) -> None:
    held = state.copy
    assert held is not None
    if held.properties != tuple(state.event_schema):  # a property came since it was built
        forget_copy(cur, copies, state)
        return
    with duckdb_events.registered(cur, batch) as source:
        duckdb_streaming_copy.append(cur, held, source, state.event_schema)


def follow_copy(
    cur: Cursor, copies: str, state: Workspace, change: Callable[[str], object]
) -> None:
    """Make the change the events table just had (a committed one) to the streaming copy,
    if the workspace has one; a copy the change fails on is dropped (the next read
    rebuilds it), never left behind the table."""
    if state.copy is None or state.copy.table is None:
        return
    try:
        change(state.copy.table)
    except Exception:  # a cache: whatever went wrong, it goes (and is built again)
        log.warning("streaming copy of %s dropped after a failed change", state.events)
        forget_copy(cur, copies, state)


def forget_copy(cur: Cursor, copies: str, state: Workspace) -> None:
    """Drop the workspace's streaming copy (the next streaming read builds a new one)."""
    state.copy = None
    with suppress(duckdb.Error):  # nothing reads it now; only its memory is at stake
        duckdb_streaming_copy.drop(cur, copies, state.events)

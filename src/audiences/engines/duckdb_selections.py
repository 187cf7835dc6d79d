"""Selections in the DuckDB engine: a rule's WHERE-SQL and a member query run into bitmaps of
pids, and DuckDB's errors about them made into the caller's (the SQL cannot run on this data,
not the engine broke).

The engine (:mod:`audiences.engines.duckdb`) holds the cursors and the workspace state; these
functions run on the cursor it hands them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import duckdb
from pyroaring import BitMap

from audiences.engines import conditions, queries
from audiences.engines import duckdb_sql as sql
from audiences.engines.base import Params, pids_to_bitmap
from audiences.engines.duckdb_writes import Cursor, Workspace
from audiences.errors import Unprocessable

QUERY_ERRORS = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.NotImplementedException,
    duckdb.OutOfRangeException,
    duckdb.ParserException,
)
"""DuckDB errors that mean the WHERE-SQL cannot run on this data, not that the engine broke."""

QUERY_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (duckdb.ConversionException, "a value cannot be converted to the type the rule needs"),
    (duckdb.OutOfRangeException, "a computed number is out of range"),
)


def select(
    cur: Cursor,
    state: Workspace,
    condition: str,
    params: Params,
    aliases: Sequence[str] = (),
) -> BitMap:
    """The pids of the profiles that meet ``condition`` (checked), each alias of ``aliases``
    (registered on ``cur``) left-joined on the pid."""
    joins = "".join(
        f" LEFT JOIN {sql.quote(a)} ON {sql.quote(a)}.pid = profiles.pid" for a in aliases
    )
    # Behavioural conditions read the workspace's events as `events` (docs/rules.md).
    reads = sql.reads_events(condition)
    cte = f"WITH events AS (SELECT * FROM {state.events}) " if reads else ""
    query = f"{cte}SELECT profiles.pid FROM {state.table} AS profiles{joins} WHERE ({condition})"
    bound = dict(params) if isinstance(params, Mapping) else list(params)
    try:
        result = cur.execute(query, bound).fetchnumpy()
    except QUERY_ERRORS as error:
        raise conditions.condition_refused(error, _reason(error)) from None
    return pids_to_bitmap(result["pid"])


def members(
    cur: Cursor,
    state: Workspace,
    pointed: str,
    tables: Mapping[str, str],
    timeout_seconds: float | None,
) -> BitMap:
    """The pids a member query (checked, and ``pointed`` at the workspace's ``tables``) names:
    an integer column is taken as pids, a text one as external ids, any other refused. Past
    ``timeout_seconds`` the cursor, one of the query's own, is interrupted (DuckDB stops
    between vectors)."""
    # Defence in depth behind the checker: a name the catalog lacks is never looked up
    # among Python variables (a replacement scan; this setting holds for the cursor
    # alone). enable_external_access would stop file reads too, but it is global and
    # one-way: it would stop the engine's own imports; the checker refuses files.
    cur.execute("SET python_enable_replacements = false")
    timer = None
    if timeout_seconds is not None:
        timer = threading.Timer(timeout_seconds, cur.interrupt)
        timer.start()
    try:
        described = cur.execute(f"DESCRIBE {pointed}").fetchall()
        kind = str(described[0][1]).upper()
        if kind not in sql.INTEGER_TYPES | sql.TEXT_TYPES:
            raise queries.wrong_column(kind)
        by_pid = kind in sql.INTEGER_TYPES
        found = cur.execute(sql.members_of_query(state.table, pointed, by_pid))
        return pids_to_bitmap(found.fetchnumpy()["pid"])
    except duckdb.InterruptException:
        raise Unprocessable(
            f"the SQL source ran longer than {timeout_seconds:g} s and was stopped",
            code="engine_query_timeout",
        ) from None
    except QUERY_ERRORS as error:
        raise conditions.member_query_refused(error, str(error).splitlines()[0], tables) from None
    finally:
        if timer is not None:
            timer.cancel()


def _reason(error: Exception) -> str:
    return next(
        (words for kind, words in QUERY_FAILURES if isinstance(error, kind)), conditions.CANNOT_RUN
    )

"""WHERE-SQL from the rule compiler, checked before any engine runs it.

Every engine runs the compiler's conditions as they are (no rewriting), so each first parses
the text with sqlglot in its own dialect and admits only the shapes the compiler emits: one
boolean expression, whose only queries are the behavioural subqueries over ``events``
correlated on the profile's pid. Engine-neutral: the dialect is an argument.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from audiences.errors import Unprocessable

log = logging.getLogger("audiences.engines")

CANNOT_RUN = "the profile engine cannot run it"
"""Why a condition failed, when the engine's error says nothing more telling."""

FORBIDDEN_NODES: tuple[type[Any], ...] = (exp.Query, exp.Command, exp.DDL, exp.DML)
"""Nodes a WHERE condition never needs: subqueries, commands, DDL and DML."""

UNTYPED_FUNCTIONS: dict[str, frozenset[str]] = {
    "duckdb": frozenset({"date_part", "list_has_all"}),
    "postgres": frozenset(),
    # ClickHouse's own (``file``, ``url``, ``getSetting``, ``sleep``, ``dictGet``) are untyped too.
    "clickhouse": frozenset(
        {"accuratecast", "arrayall", "arrayexists", "positionutf8", "todatetime64", "toint128"}
        | {"bitand", "bitshiftright", "tofloat64", "toint64"}  # exact sums (rules/sql_builders.py)
    ),
}
"""The functions sqlglot reads as untyped (``exp.Anonymous``) that the rule compiler emits, by
dialect; any other is refused. Every function the compiler emits for PostgreSQL is one sqlglot
knows, while the server's own (``pg_read_file``, ``pg_sleep``, ``set_config``, ``lo_export``,
``dblink``) are untyped: a condition can never reach them. A dialect not listed is not
checked this way."""


@lru_cache(maxsize=4096)
def checked_condition(where_sql: str, dialect: str) -> str:
    """The WHERE-SQL unchanged, once sqlglot has seen one condition without forbidden nodes.

    The only queries allowed are the rule compiler's behavioural subqueries (see
    ``_behavioural``): a SELECT over ``events`` correlated on the profile's pid. Cached by
    text: the check depends on the text alone, and a rule's compiled SQL is the same text on
    every run (its time is a bound parameter), so each condition is parsed once. A refused text
    raises every time (exceptions are not cached).
    """
    condition = _parsed_condition(where_sql, dialect)
    queries = [q for q in condition.find_all(exp.Select) if q.find_ancestor(exp.Select) is None]
    if not all(_behavioural(query, dialect) for query in queries):
        raise _refused("The condition may only query events, as a rule's aggregates do.")
    allowed = {id(node) for query in queries for node in (query.parent, *query.walk())}
    if any(id(node) not in allowed for node in condition.find_all(*FORBIDDEN_NODES)):
        raise _refused("The condition may not contain subqueries, commands or DDL.")
    known = UNTYPED_FUNCTIONS.get(dialect)
    if known is not None:
        for function in condition.find_all(exp.Anonymous):
            if function.name.lower() not in known:
                raise _refused(f"The condition may not call {function.name}().")
    return where_sql


@lru_cache(maxsize=4096)
def reads_events(where_sql: str, dialect: str) -> bool:
    """Whether a (checked) condition queries the events relation."""
    return _parsed_condition(where_sql, dialect).find(exp.Select) is not None


def _parsed_condition(where_sql: str, dialect: str) -> exp.Expr:
    try:
        statements = sqlglot.parse(where_sql, read=dialect)
    except ParseError as error:
        raise _refused(f"The condition does not parse: {error}") from None
    condition = statements[0] if len(statements) == 1 else None
    # A rule that is one boolean aggregate alone (``last(coupon)``) compiles to a bare scalar
    # subquery: an expression too, checked like any other query below.
    scalar = isinstance(condition, exp.Subquery) and isinstance(condition.this, exp.Select)
    if not (isinstance(condition, exp.Condition) or scalar):
        raise _refused("The condition must be one SQL expression.")
    assert condition is not None
    return condition


_QUERY_PARTS = {"expressions", "from_", "joins", "where", "group"}


def _behavioural(query: exp.Select, dialect: str) -> bool:
    """A compiled aggregate or sequence (see ``rules/behaviour_sql.py``): a SELECT of one value
    under a scalar subquery or EXISTS, correlated on the profile (``alias.pid = profiles.pid``
    for each relation it reads), whose relations are ``events`` under an alias or subqueries of
    the same kind (events grouped or ranked by profile); no other table, no table function, no
    LIMIT, no set operation."""
    parent = query.parent
    if not isinstance(parent, exp.Subquery | exp.Exists) or len(query.expressions) != 1:
        return False
    if query.args.get("group"):  # only the events grouped by profile inside are grouped
        return False
    relations = _relations(query)
    if relations is None:
        return False
    where = query.args.get("where")
    condition: exp.Expr | None = where.this if where is not None else None
    conjuncts = [*condition.flatten()] if isinstance(condition, exp.And) else [condition]
    found = [c for c in conjuncts if c is not None]
    return all(_correlated(alias, found, dialect) for alias in relations)


def _relations(query: exp.Select) -> list[str] | None:
    """The aliases a query reads, when each is ``events`` or a subquery reading only events
    (checked all the way down); None for anything else."""
    if {key for key, value in query.args.items() if value} - _QUERY_PARTS:
        return None
    if query.args.get("from_") is None:
        return None
    joins = query.args.get("joins") or []
    if not all(
        join.kind == "CROSS" and {k for k, v in join.args.items() if v} <= {"this", "kind"}
        for join in joins
    ):
        return None
    aliases = []
    for relation in [query.args["from_"].this, *(join.this for join in joins)]:
        if not relation.alias:
            return None
        if isinstance(relation, exp.Table):
            if relation.name != "events" or not isinstance(relation.this, exp.Identifier):
                return None
            if relation.args.get("db") or relation.args.get("catalog"):
                return None
        elif (
            not (isinstance(relation, exp.Subquery) and isinstance(relation.this, exp.Select))
            or _relations(relation.this) is None
        ):
            return None
        aliases.append(relation.alias)
    nested = [n for n in query.find_all(exp.Select) if n is not query]
    if any(n.find_ancestor(exp.Subquery) is None or not _inside_from(n, query) for n in nested):
        return None
    return aliases


def _subquery_of_events(relation: exp.Expr) -> bool:
    """Whether a relation is a subquery that itself reads only events (see :func:`_relations`)."""
    if not (isinstance(relation, exp.Subquery) and isinstance(relation.this, exp.Select)):
        return False
    return _relations(relation.this) is not None


def _inside_from(node: exp.Select, query: exp.Select) -> bool:
    """Whether a nested SELECT is one of the relations of ``query`` (or nested in one)."""
    relations = [query.args["from_"].this, *(j.this for j in query.args.get("joins") or [])]
    return any(node is r.this or any(node is n for n in r.find_all(exp.Select)) for r in relations)


def _correlated(alias: str, conjuncts: Sequence[exp.Expr], dialect: str) -> bool:
    wanted = f"{alias}.pid = profiles.pid"
    return any(isinstance(c, exp.EQ) and c.sql(dialect=dialect) == wanted for c in conjuncts)


def _refused(detail: str) -> Unprocessable:
    return Unprocessable(detail, code="engine_condition_invalid")


def condition_refused(error: Exception, reason: str = CANNOT_RUN) -> Unprocessable:
    """Our error for a condition an engine could not run: ``reason`` in words, never the
    engine's message (it quotes the generated SQL and table names), which goes to the log."""
    log.warning("profile engine refused a condition: %s", error)
    return Unprocessable(
        f"the rule cannot be evaluated on this workspace's profiles: {reason}",
        code="engine_query_failed",
    )


def member_query_refused(error: Exception, said: str, tables: Mapping[str, str]) -> Unprocessable:
    """Our error for a SQL source's query an engine could not run: ``said`` is what went wrong
    as the engine put it, without the SQL it echoes, and the real table names in it go back to
    their public ones (``tables``: public -> real); the whole message goes to the log."""
    log.warning("profile engine refused a member query: %s", error)
    for public, real in tables.items():
        said = said.replace(real, public).replace(real.split(".")[-1].strip('"'), public)
    return Unprocessable(
        f"the SQL source cannot run on this workspace's data: {said}", code="engine_query_failed"
    )

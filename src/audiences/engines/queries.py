"""Read-only member queries: one SELECT over a workspace's ``profiles`` and ``events``, checked
with sqlglot before it is saved and again before it runs, then pointed at the real tables.

An external audience's SQL source is client text run inside the engine, so what passes is a
whitelist, not a blacklist: one statement, a query (SELECT, or a UNION / INTERSECT / EXCEPT of
them) with no DDL, DML, commands or ``INTO`` anywhere; every table read is ``profiles``,
``events`` or a CTE of the query visible where the table is read (checked scope by scope,
so a CTE of one subquery never admits a table of the same name elsewhere), unqualified (no
schema, no catalog, no table function, no file name in quotes); every function is one sqlglot
knows as such (``lower``, ``count``, ``list_contains`` …) and none that reads files, settings
or sequences, or one of a few engine functions known harmless (:data:`SAFE_FUNCTIONS`), and
none that names the engine, its catalog or its user (:data:`FORBIDDEN_FUNCTIONS`), nor a
name the engine reads as one of those unless qualified (:data:`ENGINE_NAMES`); and the query
returns exactly one column. Each problem is reported with its position and a stable
code. Any engine implements ``select_query_pids`` with :func:`check_select` and
:func:`point_at` in its own dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.scope import Scope, traverse_scope

from audiences.errors import ErrorDetail, Unprocessable, ValidationFailed

TABLES = ("profiles", "events")
"""The relations a member query may read: the workspace's own profile and event tables."""

SAFE_FUNCTIONS = frozenset({"now", "today", "hash", "md5", "sha256", "age", "to_json"})
"""Engine functions sqlglot does not model that a member query may call: pure computations.
Every other function sqlglot does not know (``read_text``, ``getenv``, ``nextval``,
``current_setting``, ``glob``, ``query`` …) is refused."""

FORBIDDEN_FUNCTIONS: tuple[type[exp.Func], ...] = (
    exp.ReadCSV,
    exp.ReadParquet,
    exp.Columns,
    exp.CurrentDatabase,
    exp.CurrentCatalog,
    exp.CurrentSchema,
    exp.CurrentSchemas,
    exp.CurrentUser,
    exp.CurrentRole,
    exp.SessionUser,
    exp.CurrentVersion,
)
"""Functions sqlglot does model that read files (``read_csv``), expand to columns chosen by
pattern (``COLUMNS(*)``, which reaches past the one column a query returns), or tell about
the engine rather than the data (``current_database()``, ``version()``, ``current_user`` …)."""

ENGINE_NAMES = frozenset(
    {"user", "current_user", "session_user", "current_role", "current_schema", "current_catalog"}
)
"""Names an engine reads as its own values when no column has them, quoted or not (DuckDB:
``SELECT "current_schema"`` is ``main``; PostgreSQL, unquoted): a query names them only
qualified (``profiles.user``, an attribute), which is never read that way."""

CTE_PREFIX = "member_query_cte_"
"""What :func:`point_at` renames every CTE to (with its number), so the engine resolves each
table exactly as the checker did: a real table, or one CTE it saw in scope."""

WRITES: tuple[type[exp.Expr], ...] = (exp.DDL, exp.DML, exp.Command, exp.Into, exp.Pragma)
"""Nodes that change or reach outside the data: never in a member query."""

ENGINE_CLAUSES = ("settings", "format")
"""Query clauses that reach the engine's own controls (ClickHouse: ``SETTINGS``, ``FORMAT``)."""

CODE = "sync_query_invalid"
"""The code of the error that refuses a query; ``errors[]`` hold each problem's own code."""


def check_select(text: str, dialect: str) -> exp.Query:
    """The parsed query when it is a safe member query (see the module), else
    ``ValidationFailed`` (``sync_query_invalid``) listing every problem with its position."""
    try:
        return _checked(text, dialect)
    except RecursionError:  # sqlglot parses and walks recursively: 5,000 nested brackets
        problem = ErrorDetail(
            "sql_too_deep", "the query nests too deeply", ("body", "source", "query")
        )
        raise _refused([problem]) from None


def _checked(text: str, dialect: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except (ParseError, TokenError) as error:
        raise _refused([_syntax(text, error)]) from None
    if not statements:
        raise _refused([_at(text, "sql_not_select", "the query is empty; write one SELECT", None)])
    if len(statements) != 1:
        where = _span(statements[1]) if len(statements) > 1 else None
        problem = _at(text, "sql_multiple_statements", "one SELECT statement only", where)
        raise _refused([problem])
    query = statements[0]
    if not isinstance(query, exp.Query) or isinstance(query, WRITES):
        said = f"{query.key.upper()} is not allowed; only SELECT"
        if isinstance(query, exp.Condition):
            said = "an expression is not a query; only SELECT"
        whole = (len(text) - len(text.lstrip()), len(text.rstrip()))
        problem = _at(text, "sql_not_select", said, whole)
        raise _refused([problem])
    problems = [*_writes(text, query), *_tables(text, query), *_functions(text, query)]
    problems += _engine_names(text, query)
    problems += _columns(text, query)
    if problems:
        raise _refused(problems)
    return query


def wrong_column(type_name: str) -> Unprocessable:
    """The error for a query whose column is neither integers (pids) nor text (external ids),
    found when it runs: read as ids, its values would name no profile and the sync would empty
    the audience without a word."""
    return Unprocessable(
        f"the query returns a column of type {type_name}; it must return external ids (text) "
        "or pids (integers): cast it",
        code=CODE,
    )


def point_at(query: exp.Query, tables: Mapping[str, str], dialect: str) -> str:
    """The checked ``query`` as SQL of ``dialect`` reading the real tables: each ``profiles``
    and ``events`` becomes ``tables[name]`` (an identifier, quoted as the engine needs), under
    its alias or its own name so qualified columns (``profiles.age``) still resolve. Every CTE
    is renamed (:data:`CTE_PREFIX`) and each table that reads one in its scope with it; a table
    that is neither (never the case after :func:`check_select`) refuses the query, so the
    engine never looks a name up in its own catalog. Identifiers are quoted, so no column name
    can turn into an engine keyword (``user``), and comments are left out."""
    copy = query.copy()
    renamed = {id(cte): f"{CTE_PREFIX}{n}" for n, cte in enumerate(copy.find_all(exp.CTE))}
    swaps: list[tuple[exp.Table, exp.Expr]] = []
    for scope, table in _scoped_tables(copy):
        cte = _visible_cte(scope, table)
        alias = table.alias or table.name
        if cte is not None and id(cte) in renamed:
            swaps.append((table, _aliased(exp.to_table(renamed[id(cte)]), alias)))
        elif _plain(table) and table.name.lower() in TABLES:
            real = exp.to_table(tables[table.name.lower()], dialect=dialect)
            swaps.append((table, _aliased(real, table.alias or table.name.lower())))
        else:
            raise _refused([_at("", "sql_table_not_allowed", _not_readable(table), None)])
    for cte in copy.find_all(exp.CTE):
        alias = cte.args["alias"]
        alias.set("this", exp.to_identifier(renamed[id(cte)]))
    done = set()
    for table, new in swaps:
        table.replace(new)
        done.add(id(new))
    left = [table for table in copy.find_all(exp.Table) if id(table) not in done]
    if left:
        raise _refused([_at("", "sql_table_not_allowed", _not_readable(left[0]), None)])
    return copy.sql(dialect=dialect, identify=True, comments=False)


def _aliased(table: exp.Table, alias: str) -> exp.Table:
    table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return table


def _writes(text: str, query: exp.Query) -> list[ErrorDetail]:
    problems = [
        _at(text, "sql_not_read_only", "the query may only read", _span(node))
        for node in query.find_all(*WRITES)
    ]
    # ClickHouse's SETTINGS and FORMAT clauses would loosen what the engine sets around the
    # query (its time limit, read-only mode, FINAL reads) or change what it returns.
    for node in query.find_all(exp.Query):
        if any(node.args.get(clause) for clause in ENGINE_CLAUSES):
            message = "the query may not set engine settings or an output format"
            problems.append(_at(text, "sql_not_read_only", message, None))
    return problems


def _tables(text: str, query: exp.Query) -> list[ErrorDetail]:
    problems = []
    for cte in query.find_all(exp.CTE):
        if cte.alias.lower() in TABLES:
            message = f"a CTE may not be named {cte.alias.lower()}"
            problems.append(_at(text, "sql_table_not_allowed", message, None))
    seen = set()
    for scope, table in _scoped_tables(query):
        seen.add(id(table))
        if _visible_cte(scope, table) is not None:
            continue
        if _plain(table) and table.name.lower() in TABLES:
            continue
        problems.append(_at(text, "sql_table_not_allowed", _not_readable(table), _span(table)))
    for table in query.find_all(exp.Table):  # any table no scope holds is refused too
        if id(table) not in seen:
            where = _span(table)
            problems.append(_at(text, "sql_table_not_allowed", _not_readable(table), where))
    return problems


def _scoped_tables(query: exp.Query) -> list[tuple[Scope, exp.Table]]:
    """Every table the query reads, with the scope it is read in (sqlglot's scopes: each
    SELECT, subquery, CTE, derived table, UNION side and LATERAL is one)."""
    try:
        scopes = traverse_scope(query)
    except OptimizeError:
        return []  # no table is then held by a scope: every one is refused
    return [(scope, table) for scope in scopes for table in scope.tables]


def _visible_cte(scope: Scope, table: exp.Table) -> exp.CTE | None:
    """The CTE an unqualified table names in its own scope, else ``None`` (a recursive CTE's
    scope, read from its own body, is its first branch: the CTE is then its ancestor)."""
    if not _plain(table):
        return None
    source = scope.cte_sources.get(table.name)
    if not isinstance(source, Scope):
        return None
    found = source.expression.find_ancestor(exp.CTE)
    return found if isinstance(found, exp.CTE) else None


def _plain(table: exp.Table) -> bool:
    """A bare name: no schema, no catalog, no function, no file name."""
    named = isinstance(table.this, exp.Identifier)
    return named and not table.args.get("db") and not table.args.get("catalog")


def _not_readable(table: exp.Table) -> str:
    shown = table.sql(dialect="duckdb")
    return f"{shown} is not readable here; a query reads only profiles and events"


def _functions(text: str, query: exp.Query) -> list[ErrorDetail]:
    problems = []
    for func in query.find_all(exp.Func):
        anonymous = isinstance(func, exp.Anonymous)
        if anonymous and func.name.lower() in SAFE_FUNCTIONS:
            continue
        if not anonymous and not isinstance(func, FORBIDDEN_FUNCTIONS):
            continue
        name = func.name if anonymous else func.sql_name().lower()
        message = f"the function {name}() is not allowed in a member query"
        where = _span(func)
        if where is not None and text[where[1] : where[1] + 1] == ")":  # its closing paren
            where = (where[0], where[1] + 1)
        elif where is not None and text[where[1] : where[1] + 2] == "()":  # no arguments
            where = (where[0], where[1] + 2)
        problems.append(_at(text, "sql_function_not_allowed", message, where))
    return problems


def _engine_names(text: str, query: exp.Query) -> list[ErrorDetail]:
    problems = []
    for column in query.find_all(exp.Column):
        name = column.name.lower()
        if not column.table and name in ENGINE_NAMES:
            message = (
                f"{name} names the engine, not the data; "
                f"an attribute of that name is read as profiles.{name}"
            )
            problems.append(_at(text, "sql_function_not_allowed", message, _span(column)))
    return problems


def _columns(text: str, query: exp.Query) -> list[ErrorDetail]:
    selects = query.selects
    if len(selects) == 1 and not isinstance(selects[0], exp.Star):
        return []
    message = "the query returns one column: the members' external ids or pids"
    return [_at(text, "sql_one_column", message, _span(query))]


def _syntax(text: str, error: ParseError | TokenError) -> ErrorDetail:
    found: list[dict[str, Any]] = getattr(error, "errors", None) or [{}]
    first = found[0]
    line, col = first.get("line"), first.get("col")
    near = first.get("highlight")
    message = f"the query does not parse near {near!r}" if near else "the query does not parse"
    if line is None or col is None:
        return ErrorDetail("sql_syntax", message, ("body", "source", "query"))
    offset = _offset(text, int(line), int(col))
    return ErrorDetail(
        "sql_syntax", message, ("body", "source", "query"), offset, offset + 1, line, col
    )


def _span(node: exp.Expr) -> tuple[int, int] | None:
    """Half-open character offsets a node covers, from the token positions sqlglot kept."""
    starts, ends = [], []
    for sub in node.walk():
        meta = sub._meta
        if meta and "start" in meta:
            starts.append(int(meta["start"]))
            ends.append(int(meta["end"]) + 1)
    return (min(starts), max(ends)) if starts else None


def _at(text: str, code: str, message: str, where: tuple[int, int] | None) -> ErrorDetail:
    location: tuple[str | int, ...] = ("body", "source", "query")
    if where is None:
        return ErrorDetail(code, message, location)
    line = text.count("\n", 0, where[0]) + 1
    col = where[0] - (text.rfind("\n", 0, where[0]) + 1) + 1
    return ErrorDetail(code, message, location, where[0], where[1], line, col)


def _offset(text: str, line: int, col: int) -> int:
    """The character offset of a 1-based line and column (sqlglot's ``col`` ends the token)."""
    lines = text.split("\n")
    before = sum(len(part) + 1 for part in lines[: max(line - 1, 0)])
    return min(before + max(col - 1, 0), len(text))


def _refused(problems: list[ErrorDetail]) -> ValidationFailed:
    codes = ", ".join(dict.fromkeys(problem.code for problem in problems))
    detail = f"the SQL source is not a safe member query ({codes})"
    return ValidationFailed(detail, code=CODE, errors=problems)

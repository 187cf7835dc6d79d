"""The whitelist: which nodes, functions, literals and sizes a rule may have (no schema needed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import re2
from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules import behaviour
from audiences.rules import dialect as d
from audiences.rules.diagnostics import did_you_mean, on
from audiences.rules.operators import OPERATORS
from audiences.rules.rule import RuleLimits

EXTRACT_UNITS = ("YEAR", "QUARTER", "MONTH", "WEEK", "DAY", "DOW", "DOY", "HOUR", "MINUTE")
CASTS = {exp.DType.DOUBLE, exp.DType.TIMESTAMPTZ, exp.DType.DATE}

FORBIDDEN_FUNCTIONS = {
    **dict.fromkeys(
        ("array_agg", "string_agg", "list", "any_value"),
        "only count, sum, avg, min, max and last aggregate events in a rule",
    ),
    **dict.fromkeys(
        ("row_number", "rank", "dense_rank", "lag", "lead", "first_value", "last_value"),
        "window functions are not allowed in a rule",
    ),
    **dict.fromkeys(
        (
            "read_csv",
            "read_csv_auto",
            "read_parquet",
            "read_json",
            "read_json_auto",
            "glob",
            "read_text",
            "read_blob",
            "pg_read_file",
            "pg_read_binary_file",
            "lo_import",
            "file",
            "url",
            "s3",
            "remote",
            "getenv",
            "current_setting",
            "set_config",
            "pg_sleep",
            "sleep",
        ),
        "functions that read files, the network or the server are not allowed in a rule",
    ),
}

_NODE_NAMES: dict[type[exp.Expr], str] = {
    exp.Select: "a subquery",
    exp.Subquery: "a subquery",
    exp.Star: "'*'",
    exp.Window: "a window function",
    exp.Placeholder: "a parameter placeholder",
    exp.Parameter: "a parameter",
    exp.Table: "a table reference",
    exp.Exists: "EXISTS",
    exp.Case: "CASE",
    exp.If: "IF",
    exp.DPipe: "'||'",
    exp.Bracket: "indexing with []",
}
_STATEMENTS = (exp.Query, exp.DDL, exp.DML, exp.Command, exp.Drop, exp.Create, exp.Alter)

Check = Callable[[exp.Expr, str | None, RuleLimits], Iterator[ErrorDetail]]


def check_structure(tree: exp.Expr, text: str | None, limits: RuleLimits) -> list[ErrorDetail]:
    """Every structural problem: forbidden nodes, unknown calls, bad literals, size, depth."""
    problems = list(_size(tree, text, limits))
    if problems:
        return problems
    for node in tree.walk():
        check = CHECKS.get(type(node))
        if check is not None:
            problems.extend(check(node, text, limits))
        elif type(node) not in OPERATORS and not _is_part(node):
            problems.append(_forbidden(node, text))
    return problems


def _size(tree: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    count, deepest = 0, (0, tree)
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, (depth, node), key=lambda pair: pair[0])
        for child in node.iter_expressions():
            chained = type(child) is type(node) and isinstance(node, exp.Connector)
            stack.append((child, depth if chained or isinstance(node, exp.Paren) else depth + 1))
    if count > limits.max_nodes:
        message = f"The rule has {count:,} parts; the limit is {limits.max_nodes:,}."
        yield on("rule_too_large", message, tree, text)
    elif deepest[0] > limits.max_depth:
        message = f"The rule nests {deepest[0]} levels deep; the limit is {limits.max_depth}."
        yield on("rule_too_deep", message, deepest[1], text)


def _is_part(node: exp.Expr) -> bool:
    """Nodes that are syntax inside an allowed parent rather than values of their own."""
    parent = node.parent
    if isinstance(node, exp.DataType):
        return isinstance(parent, exp.Cast)
    if isinstance(node, exp.Var):
        return isinstance(parent, exp.Interval | exp.Extract)
    return False


def _forbidden(node: exp.Expr, text: str | None) -> ErrorDetail:
    if isinstance(node, _STATEMENTS):
        message = "A rule is a condition, not a statement or query."
    else:
        what = _NODE_NAMES.get(type(node), f"'{node.key}'")
        message = f"{what[0].upper()}{what[1:]} is not allowed in a rule."
    return on("rule_forbidden", message, node, text)


def _anonymous(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    name = node.name.lower()
    if name in FORBIDDEN_FUNCTIONS:
        yield on("rule_forbidden", f"{name}(): {FORBIDDEN_FUNCTIONS[name]}.", node, text)
        return
    suggestion = did_you_mean(name, d.function_names())
    hint = f" Did you mean {suggestion}()?" if suggestion else ""
    message = f"Unknown function {name}().{hint}"
    yield on("rule_unknown_function", message, node, text, suggestion=suggestion)


def _bad_call(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    spec = d.FUNCTIONS[node.name]
    low, high = spec.arity
    wanted = f"{low}" if low == high else f"{low} to {high}"
    got = len(node.expressions)
    message = f"{node.name}() takes {wanted} argument{'s' * (high != 1)}, got {got}: {spec.usage}."
    yield on("rule_wrong_arity", message, node, text, suggestion=spec.usage)


def _string_literal(node: exp.Expr | None) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _literal_list(
    items: list[exp.Expr], owner: exp.Expr, text: str | None, limits: RuleLimits
) -> Iterator[ErrorDetail]:
    if not items:
        yield on("rule_forbidden", "An empty list is not allowed here.", owner, text)
    if len(items) > limits.max_list:
        message = f"The list has {len(items):,} values; the limit is {limits.max_list:,}."
        yield on("rule_too_large", message, owner, text)
    for item in items:
        negative = isinstance(item, exp.Neg) and isinstance(item.this, exp.Literal)
        if isinstance(item, exp.Null):
            message = "NULL never matches in a list; test the attribute with IS NULL."
            yield on("rule_forbidden", message, item, text)
        elif not (isinstance(item, exp.Literal | exp.Boolean) or negative or _typed_literal(item)):
            yield on("rule_forbidden", "A list may only hold literal values.", item, text)


def _typed_literal(node: exp.Expr) -> bool:
    return isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal)


def _in(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    if set(node.args) - {"this", "expressions"}:
        yield on("rule_forbidden", "IN takes a list of literal values only.", node, text)
        return
    yield from _literal_list(node.expressions, node, text, limits)


def _array(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    if not isinstance(node.parent, d.ListHasAny | d.ListHasAll) or node.arg_key != "expression":
        message = "A list literal may only be the second argument of list_has_any/list_has_all."
        yield on("rule_forbidden", message, node, text)
    yield from _literal_list(node.expressions, node, text, limits)


def _like(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    pattern = node.expression
    if not _string_literal(pattern):
        yield on("rule_forbidden", "The LIKE pattern must be a string literal.", node, text)
    elif (len(pattern.name) - len(pattern.name.rstrip("\\"))) % 2 == 1:
        message = "The LIKE pattern ends with a lone escape character '\\'."
        yield on("rule_bad_pattern", message, pattern, text, suggestion=pattern.name + "\\")


def _regexp(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    pattern = node.expression
    if not _string_literal(pattern):
        yield on("rule_forbidden", "The regular expression must be a string literal.", node, text)
        return
    try:
        compile_regex(pattern.name)
    except re2.error as error:
        reason = error.args[0].decode() if isinstance(error.args[0], bytes) else str(error)
        message = f"Invalid regular expression (RE2 syntax): {reason}."
        yield on("rule_bad_regex", message, pattern, text)


def compile_regex(pattern: str) -> Any:
    """Compile a rule's pattern with RE2 (linear time), ``.`` matching newlines."""
    options = re2.Options()
    options.log_errors = False
    options.dot_nl = True
    options.max_mem = 8 << 20
    return re2.compile(pattern, options)


def _audience(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    if not _string_literal(node.this) or not node.this.name:
        message = "in_audience() takes an audience key as a string literal."
        yield on("rule_forbidden", message, node, text, suggestion="in_audience('key')")


def _days(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    unit = node.args["unit"]
    if not (_string_literal(unit) and unit.name.lower() == "day"):
        message = "date_diff() counts days only: date_diff('day', start, end)."
        yield on("rule_forbidden", message, unit, text, suggestion="'day'")


def _extract(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    unit = node.this.name.upper()
    if unit not in EXTRACT_UNITS:
        message = f"EXTRACT supports {', '.join(EXTRACT_UNITS)}; not {unit}."
        yield on(
            "rule_forbidden", message, node, text, suggestion=did_you_mean(unit, EXTRACT_UNITS)
        )


def _cast(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    assert isinstance(node, exp.Cast)
    target, source = node.to.this, node.this
    literal = _string_literal(source)
    allowed = {
        exp.DType.DOUBLE: not literal,
        exp.DType.DATE: literal,
        exp.DType.TIMESTAMPTZ: True,
    }
    if not allowed.get(target, False):
        message = (
            f"CAST to {node.to.sql()} is not supported here: use CAST(number AS DOUBLE),"
            " CAST(date AS TIMESTAMP), DATE '...' or TIMESTAMP '...'."
        )
        yield on("rule_forbidden", message, node, text)


def _trim(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    if set(node.args) - {"this"}:
        yield on("rule_forbidden", "trim() takes one argument and trims spaces.", node, text)


def _interval(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    if not isinstance(node.parent, exp.Add | exp.Sub | d.EventSequence):
        message = "An INTERVAL may only be added to or subtracted from a date or timestamp."
        yield on("rule_forbidden", message, node, text)


def _escape(node: exp.Expr, text: str | None, limits: RuleLimits) -> Iterator[ErrorDetail]:
    message = "LIKE always escapes with backslash; a custom ESCAPE is not supported."
    yield on("rule_forbidden", message, node, text)


CHECKS: dict[type[exp.Expr], Check] = {
    exp.Anonymous: _anonymous,
    d.BadCall: _bad_call,
    exp.In: _in,
    exp.Array: _array,
    exp.Like: _like,
    exp.ILike: _like,
    d.RegexpMatches: _regexp,
    d.InAudience: _audience,
    d.DaysBetween: _days,
    exp.Extract: _extract,
    exp.Cast: _cast,
    exp.Trim: _trim,
    exp.Interval: _interval,
    exp.Escape: _escape,
    d.Aggregate: behaviour.check_aggregate,
    d.EventSequence: behaviour.check_aggregate,
    d.EventField: behaviour.check_field,
}
"""Node-specific checks; a node class missing here and from OPERATORS is forbidden."""

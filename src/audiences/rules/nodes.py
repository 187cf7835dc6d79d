"""Walking rule trees: the helpers every back end shares."""

from __future__ import annotations

from sqlglot import exp


def operands(node: exp.Expr) -> list[exp.Expr]:
    """A node's operands in order: its child expressions, list arguments flattened.

    >>> import sqlglot
    >>> [o.sql() for o in operands(sqlglot.parse_one("a IN (1, 2)"))]
    ['a', '1', '2']
    """
    result: list[exp.Expr] = []
    for key in node.arg_types:
        value = node.args.get(key)
        if isinstance(value, list):
            result.extend(value)
        elif isinstance(value, exp.Expr):
            result.append(value)
    return result

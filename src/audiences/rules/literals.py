"""Python values of literal nodes, and Python code for LIKE patterns."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import re2
from sqlglot import exp

from audiences.rules import sql_semantics
from audiences.rules.structure import compile_regex

NOT_CONSTANT = object()
"""What ``constant`` returns for a node that is not a literal."""


def constant(node: exp.Expr) -> Any:
    """The Python value of a literal node, or ``NOT_CONSTANT`` when the node is not a literal."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.name
        return int(node.this) if node.this.lstrip("-").isdigit() else float(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -constant(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Var):
        return node.name.upper()
    if isinstance(node, exp.Interval):
        return sql_semantics.interval(constant(node.this), node.text("unit").upper())
    if isinstance(node, exp.Array):
        return tuple(constant(item) for item in node.expressions)
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        kind = node.to.this
        raw = node.this.name
        return date.fromisoformat(raw) if kind is exp.DType.DATE else datetime.fromisoformat(raw)
    return NOT_CONSTANT


def like_code(const: Callable[[Any], str], name: str, pattern: str, fold: bool) -> str:
    """Code testing ``name LIKE pattern``: string methods for the common shapes, else RE2."""
    if fold:
        name, pattern = f"_lower({name})", sql_semantics.lower(pattern)
    pieces = re.findall(r"\\.|[%_]|[^\\%_]+", pattern, flags=re.S)
    literal = "".join(p[-1] if p.startswith("\\") else p for p in pieces if p not in "%_")
    shape = "".join(p if p in ("%", "_") else "L" for p in pieces)
    shape = re.sub("L+", "L", shape)
    simple = {
        "L": f"{name} == {literal!r}",
        "": f"{name} == ''",
        "%": "True",
        "L%": f"{name}.startswith({literal!r})",
        "%L": f"{name}.endswith({literal!r})",
        "%L%": f"({literal!r} in {name})",
    }
    if shape in simple:
        return simple[shape]
    regex = "".join(
        ".*" if p == "%" else "." if p == "_" else re2.escape(p[-1] if p.startswith("\\") else p)
        for p in pieces
    )
    return f"({const(compile_regex(regex))}.fullmatch({name}) is not None)"

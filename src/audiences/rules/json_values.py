"""JSON scalars and literal nodes, shared by the JSON form's two directions and its behavioural
conditions: a JSON value as a literal node (``literal``), a literal node as its JSON value
(``value_of``), and the error a malformed piece raises at its JSON path (``JsonProblem``)."""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules.diagnostics import JSON_PATH
from audiences.rules.normalize import usable_number
from audiences.rules.scan import SURROGATE_MESSAGE, has_surrogate

Path = tuple[str | int, ...]
"""Where a piece sits in a JSON rule: keys and list indexes from the root."""
Json = Any


class JsonProblem(Exception):
    """A malformed piece of a JSON rule, at a JSON path."""

    def __init__(self, code: str, message: str, path: Path, suggestion: str | None = None):
        super().__init__(message)
        self.detail = ErrorDetail(code, message, location=path, suggestion=suggestion)


def literal(value: Json, path: Path) -> exp.Expr:
    """A JSON scalar as a literal node (refusing null, containers, NaN and huge numbers)."""
    if isinstance(value, bool):
        return tag(exp.Boolean(this=value), path)
    if isinstance(value, str):
        if has_surrogate(value):
            raise JsonProblem("rule_bad_character", SURROGATE_MESSAGE, path)
        return tag(exp.Literal.string(value), path)
    if isinstance(value, int | float):
        if not usable_number(value):
            raise JsonProblem(
                "rule_bad_number", f"{value!r} is not a usable number (limit ±2^53).", path
            )
        spelled = str(abs(value)) if isinstance(value, int) else repr(abs(value))
        number = tag(exp.Literal.number(spelled), path)
        return tag(exp.Neg(this=number), path) if value < 0 or repr(value) == "-0.0" else number
    kind = "null (use is_null)" if value is None else type(value).__name__
    raise JsonProblem(
        "rule_type_mismatch", f"A value must be text, a number or a boolean, not {kind}.", path
    )


def tag(node: exp.Expr, path: Path) -> exp.Expr:
    """``node``, remembering the JSON path it was built from (error positions use it)."""
    node.meta[JSON_PATH] = path
    return node


def value_of(node: exp.Expr) -> Json:
    """The JSON value of a literal node (a number, a string, a boolean; a typed literal as
    its text)."""
    if isinstance(node, exp.Neg):
        return -value_of(node.this)
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Cast):
        return node.this.name
    assert isinstance(node, exp.Literal)
    if node.is_string:
        return node.name
    return int(node.this) if node.this.lstrip("-").isdigit() else float(node.this)

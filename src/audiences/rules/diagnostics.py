"""Problems found in a rule: positions in the text (or the JSON path) and the error raised."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlglot import exp

from audiences.errors import ErrorDetail, RuleError

JSON_PATH = "json_path"
"""Meta key holding the JSON path of a node built from the JSON form."""


def span(node: exp.Expr) -> tuple[int, int] | None:
    """Half-open character offsets covered by a node, from the token positions sqlglot kept."""
    starts: list[int] = []
    ends: list[int] = []
    for sub in node.walk():
        meta = sub._meta
        if meta and "start" in meta:
            starts.append(meta["start"])
            ends.append(meta["end"] + 1)
    return (min(starts), max(ends)) if starts else None


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset.

    >>> line_col("a\\nbc", 3)
    (2, 2)
    """
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def at(
    code: str,
    message: str,
    text: str | None,
    where: tuple[int, int] | None,
    *,
    location: tuple[str | int, ...] = (),
    suggestion: str | None = None,
) -> ErrorDetail:
    """A problem at character offsets ``where`` of ``text`` (or at a JSON ``location``)."""
    if where is None or text is None:
        return ErrorDetail(code, message, location=location, suggestion=suggestion)
    line, col = line_col(text, where[0])
    return ErrorDetail(
        code, message, location, where[0], where[1], line, col, suggestion=suggestion
    )


def on(
    code: str,
    message: str,
    node: exp.Expr,
    text: str | None,
    *,
    suggestion: str | None = None,
) -> ErrorDetail:
    """A problem located at a node: its text span, or its JSON path for a JSON-form rule."""
    path = _json_path(node)
    if path is not None:
        return ErrorDetail(code, message, location=path, suggestion=suggestion)
    own = node._meta if isinstance(node, exp.Anonymous | exp.Func) else None
    if own and "start" in own and not isinstance(node, exp.Cast):
        return at(code, message, text, (own["start"], own["end"] + 1), suggestion=suggestion)
    current: exp.Expr | None = node
    where = None
    while current is not None and where is None:
        where, current = span(current), current.parent
    return at(code, message, text, where, suggestion=suggestion)


def _json_path(node: exp.Expr) -> tuple[str | int, ...] | None:
    current: exp.Expr | None = node
    while current is not None:
        meta = current._meta
        if meta and JSON_PATH in meta:
            path: tuple[str | int, ...] = meta[JSON_PATH]
            return path
        current = current.parent
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice, when one is close enough to be a likely typo.

    >>> did_you_mean("contry", ["country", "city"])
    'country'
    """
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def fail(problems: Sequence[ErrorDetail]) -> None:
    """Raise one RuleError carrying every problem, when there is any."""
    unique = sorted(dict.fromkeys(problems), key=_position)
    if unique:
        problems = unique
        first = problems[0].message
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise RuleError(f"Invalid rule: {first}{more}", errors=list(problems))


def _position(problem: ErrorDetail) -> tuple[Any, ...]:
    """Order problems as they appear: by offset in the text, else by JSON path."""
    path = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, part) for part in problem.location
    )
    return (problem.start is None, problem.start or 0, path)

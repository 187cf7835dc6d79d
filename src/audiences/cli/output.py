"""How commands print: human tables and trees on stdout by default, ``--json`` for scripts,
``--quiet`` for nothing but what a script needs (ids); notes go to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

if TYPE_CHECKING:
    from pydantic import BaseModel

Json = Annotated[bool, typer.Option("--json", help="Print JSON (one document) for scripts.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only ids, or nothing.")]
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)
VALUE_STYLE = {True: "[green]true[/]", False: "[red]false[/]", None: "[yellow]null[/]"}


@dataclass(frozen=True)
class Out:
    """The output options of one command."""

    as_json: bool = False
    quiet: bool = False

    def note(self, message: str) -> None:
        """A message for people (stderr), unless quiet."""
        if not self.quiet:
            stderr.print(message, highlight=False)

    def one(self, item: BaseModel | dict[str, Any], fields: Sequence[str] = ()) -> None:
        """One resource: JSON, its id (quiet), or its fields as a two-column table."""
        data = plain(item)
        if self.as_json:
            echo_json(data)
        elif self.quiet:
            if "id" in data:
                typer.echo(data["id"])
        else:
            table = Table(show_header=False, box=None)
            for name in fields or list(data):
                table.add_row(f"[bold]{name}[/]", cell(data.get(name)))
            stdout.print(table)

    def many(self, items: Iterable[BaseModel | dict[str, Any]], columns: Sequence[str]) -> None:
        """A list: a JSON array, ids one per line (quiet), or a table of ``columns``."""
        rows = [plain(item) for item in items]
        if self.as_json:
            echo_json(rows)
        elif self.quiet:
            for row in rows:
                typer.echo(row.get("id", ""))
        else:
            table = Table()
            for name in columns:
                table.add_column(name, min_width=36 if name == "id" else None)
            for row in rows:
                table.add_row(*(cell(row.get(name)) for name in columns))
            stdout.print(table)


def plain(item: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A resource as JSON-ready data."""
    # A model (duck-typed: pydantic is imported by the commands that read models, not here).
    return item if isinstance(item, dict) else item.model_dump(mode="json")


def echo_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def cell(value: Any) -> str:
    """A value in a table cell: short and readable."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    return str(value).replace("[", r"\[")


def rule_tree(explanation: dict[str, Any], title: str) -> Tree:
    """An explanation (``{"tree": {"text", "value", "children"}, …}``) as a Rich tree, each
    node with its value."""
    tree = Tree(f"{title}: {VALUE_STYLE.get(explanation.get('value'), '?')}")
    _branch(tree, explanation.get("tree") or {})
    attributes = explanation.get("attributes") or {}
    if attributes:
        seen = tree.add("[dim]attributes read[/]")
        for name, value in attributes.items():
            seen.add(f"{name} = {json.dumps(value)}".replace("[", r"\["))
    return tree


def _branch(parent: Tree, node: dict[str, Any]) -> None:
    value = node.get("value")
    shown = VALUE_STYLE.get(value) if isinstance(value, bool) or value is None else repr(value)
    text = str(node.get("text", "")).replace("[", r"\[")
    child = parent.add(f"{text}  →  {shown}")
    for sub in node.get("children") or []:
        _branch(child, sub)

"""Lists on the command line: one page by default (and how to get the next), every page with
``--all``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audiences.cli.output import Out

if TYPE_CHECKING:
    from audiences.sdk import Pager

Limit = Annotated[int, typer.Option(min=1, max=200, help="Items per page.")]
All = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]
Cursor = Annotated[str | None, typer.Option(help="Start at this cursor (from a previous page).")]


def show(out: Out, pager: Pager[Any, Any], columns: Sequence[str], *, every: bool) -> None:
    """Print every item (``every``) or the first page, then where the next page starts."""
    if every:
        out.many(pager, columns)
        return
    page = pager.first_page()
    out.many(page.data, columns)
    if page.next_cursor:
        total = getattr(page, "total", None)
        counted = f"{total} in all; " if total is not None else ""
        out.note(f"{counted}next page: --cursor {page.next_cursor} (or --all)")

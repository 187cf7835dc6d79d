"""Iterators over lists: every page of a list (or of members, or of changes), item by item.

``for audience in client.audiences.list():`` asks for the next page only when the items of the
one before are used up, following ``next_cursor``; ``.pages()`` yields whole pages (with their
``total``, ``computed_at`` and the like).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Generic, Protocol, TypeVar

from audiences.sdk._call import Call

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = TypeVar("P", bound="PageLike[Any]")


class PageLike(Protocol[T_co]):
    """What every list answer has: items, and the cursor of the next page."""

    @property
    def data(self) -> Sequence[T_co]: ...  # pragma: no cover

    @property
    def next_cursor(self) -> str | None: ...  # pragma: no cover


class Pager(Generic[T, P]):
    """Every item of a list, fetched a page at a time as the iteration goes."""

    def __init__(self, run: Callable[[Call[P]], P], first: Call[P]) -> None:
        self._run = run
        self._first = first

    def pages(self) -> Iterator[P]:
        """Each page in turn."""
        call: Call[P] | None = self._first
        while call is not None:
            page = self._run(call)
            yield page
            call = _next(call, page)

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.data

    def first_page(self) -> P:
        """Only the first page."""
        return self._run(self._first)

    def starting_at(self, cursor: str | None) -> Pager[T, P]:
        """The same list from ``cursor`` (a page's ``next_cursor``) on; all of it if None."""
        return self if not cursor else Pager(self._run, self._first.with_params(cursor=cursor))


class AsyncPager(Generic[T, P]):
    """Every item of a list for ``async for``, fetched a page at a time."""

    def __init__(self, run: Callable[[Call[P]], Awaitable[P]], first: Call[P]) -> None:
        self._run = run
        self._first = first

    async def pages(self) -> AsyncIterator[P]:
        """Each page in turn."""
        call: Call[P] | None = self._first
        while call is not None:
            page = await self._run(call)
            yield page
            call = _next(call, page)

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.data:
                yield item

    async def first_page(self) -> P:
        """Only the first page."""
        return await self._run(self._first)

    def starting_at(self, cursor: str | None) -> AsyncPager[T, P]:
        """The same list from ``cursor`` (a page's ``next_cursor``) on; all of it if None."""
        if not cursor:
            return self
        return AsyncPager(self._run, self._first.with_params(cursor=cursor))


def _next(call: Call[P], page: PageLike[Any]) -> Call[P] | None:
    cursor = page.next_cursor
    if not cursor:
        return None
    params = {name: value for name, value in call.params.items() if name != "offset"}
    return replace(call, params={**params, "cursor": cursor})

"""What sync and async resources share: each request is written once, as a function building a
:class:`Call`, and turned into a method of both kinds by :func:`sends` / :func:`sends_async`
(and :func:`pages` / :func:`pages_async` for lists).

A resource module therefore reads ``get = sends(_calls.get)`` on the sync class and
``get = sends_async(_calls.get)`` on the async one: one definition of the path, parameters and
model, typed on both sides (``ParamSpec`` carries the signature).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from audiences.sdk._call import Call
from audiences.sdk._http import AsyncHttp, SyncHttp
from audiences.sdk.paging import AsyncPager, PageLike, Pager

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")
Pg = TypeVar("Pg", bound=PageLike[Any])


class SyncResource:
    """Base of the sync resources: holds the client's transport."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http


class AsyncResource:
    """Base of the async resources: holds the client's transport."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http


def sends(build: Callable[P, Call[T]]) -> Callable[Concatenate[SyncResource, P], T]:
    """A sync method that sends the call ``build`` makes and returns its parsed answer."""

    def method(self: SyncResource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._http.run(build(*args, **kwargs))

    functools.update_wrapper(method, build)
    return method


def sends_async(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncResource, P], Coroutine[Any, Any, T]]:
    """An async method that sends the call ``build`` makes and returns its parsed answer."""

    async def method(self: AsyncResource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._http.run(build(*args, **kwargs))

    functools.update_wrapper(method, build)
    return method


def pages(
    build: Callable[P, Call[Pg]], item: type[Item]
) -> Callable[Concatenate[SyncResource, P], Pager[Item, Pg]]:
    """A sync method returning a :class:`Pager` over every item of the list ``build`` asks."""

    def method(self: SyncResource, /, *args: P.args, **kwargs: P.kwargs) -> Pager[Item, Pg]:
        return Pager(self._http.run, build(*args, **kwargs))

    functools.update_wrapper(method, build)
    return method


def pages_async(
    build: Callable[P, Call[Pg]], item: type[Item]
) -> Callable[Concatenate[AsyncResource, P], AsyncPager[Item, Pg]]:
    """An async method returning an :class:`AsyncPager` over the list ``build`` asks."""

    def method(self: AsyncResource, /, *args: P.args, **kwargs: P.kwargs) -> AsyncPager[Item, Pg]:
        return AsyncPager(self._http.run, build(*args, **kwargs))

    functools.update_wrapper(method, build)
    return method

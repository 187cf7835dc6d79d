"""The ``>>>`` examples in the rules package's docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import audiences.rules

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(audiences.rules.__path__, "audiences.rules.")
)


@pytest.mark.parametrize("name", ["audiences.rules", *MODULES])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_public_surface_is_documented() -> None:
    for name in audiences.rules.__all__:
        item = getattr(audiences.rules, name)
        if callable(item):
            assert item.__doc__ and len(item.__doc__.strip()) > 20, name

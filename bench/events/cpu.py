"""CPU time spent inside chosen functions, by label, for the stage-by-stage benchmarks."""

from __future__ import annotations

import functools
import importlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

spent: Counter[str] = Counter()
"""Seconds of CPU time (every thread of the process) spent inside each label's functions."""


def timed(module: str, qualified: str, label: str) -> None:
    """Replace ``module.qualified`` by a wrapper that adds its CPU time to ``spent[label]``."""
    owner_name, _, name = qualified.rpartition(".")
    owner: Any = importlib.import_module(module)
    if owner_name:
        owner = getattr(owner, owner_name)
    function: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started

    setattr(owner, name, wrapper)

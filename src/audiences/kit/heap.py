"""The garbage collector told which objects live as long as the process, and how often to run."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations (less deallocations) between two collections of the youngest generation."""


def freeze_startup_objects() -> None:
    """Collect once, exclude every object alive now from later collections, and collect the
    young generation less often.

    Call it when a process has finished starting (modules, routes, mappers, settings, the
    demo data) and is about to serve. A full collection walks every tracked object; a
    10,000-record profile upsert allocates enough to start one, which took ~160 ms of a
    ~900 ms call at 180,000 startup objects (``bench/README.md``, "Streaming upserts at
    10,000 records per call"). Frozen, those objects are not walked again. The collection
    first keeps garbage made during start-up from being frozen with them. The price: a
    cycle among frozen objects that later becomes garbage is never collected, which suits
    what lives as long as the process (modules, routes, mappers, settings).

    At Python's default threshold (700) a 10,000-event write runs about 185 young
    collections, and its records, alive for the whole call, survive them into the oldest
    generation, whose full collections follow: 40-55 ms of a ~270 ms call
    (``bench/README.md``, "Behaviour"). At :data:`YOUNG_THRESHOLD` the call's objects are
    freed by their reference counts before a collection sees them; cyclic garbage waits
    for at most that many allocations.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

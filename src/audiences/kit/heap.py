"""The garbage collector told which objects live as long as the process."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then exclude every object alive now from later collections.

    Call it when a process has finished starting (modules, routes, mappers, settings, the
    demo data) and is about to serve. A full collection walks every tracked object; a
    10,000-record profile upsert allocates enough to start one, which took ~160 ms of a
    ~900 ms call at 180,000 startup objects (``bench/README.md``, "Streaming upserts at
    10,000 records per call"). Frozen, those objects are not walked again. The collection
    first keeps garbage made during start-up from being frozen with them. The price: a
    cycle among frozen objects that later becomes garbage is never collected, which suits
    what lives as long as the process (modules, routes, mappers, settings).
    """
    gc.collect()
    gc.freeze()

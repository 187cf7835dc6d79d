"""How far a sync's pull has got: bytes of a file source fetched (of its size, when known),
then rows read into the member set (of the rows it holds, once counted). The pull updates a
:class:`Tracker`; the tracker tells its ``report`` at most once a ``every`` seconds, and at
the end of each phase, so a checkpoint is written per second, not per chunk."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPORT_SECONDS = 1.0
"""The shortest time between two reports of one pull."""


@dataclass
class Tracker:
    """Where a pull stands. ``report`` is called with the tracker itself."""

    report: Callable[[Tracker], None] = field(repr=False)
    every: float = REPORT_SECONDS
    bytes_fetched: int = 0
    bytes_total: int | None = None
    rows_read: int = 0
    rows_total: int | None = None
    _last: float = field(default=0.0, repr=False)

    def fetching(self, total: int | None) -> None:
        """A file's copy starts: ``total`` bytes when its size is known."""
        self.bytes_fetched, self.bytes_total = 0, total
        self.rows_read, self.rows_total = 0, None
        self._tell(force=True)

    def fetched(self, count: int) -> None:
        """``count`` more bytes copied."""
        self.bytes_fetched += count
        self._tell()

    def counted(self, total: int | None) -> None:
        """The rows the source holds, once known (an estimate from its lines for CSV and
        NDJSON, as an import's, until the end makes it exact)."""
        self.rows_total = total
        self._tell(force=True)

    def read(self, rows: int) -> None:
        """``rows`` more rows read."""
        self.rows_read += rows
        self._tell()

    def done(self, rows: int) -> None:
        """The pull is over: ``rows`` read of exactly ``rows``."""
        self.rows_read = self.rows_total = rows
        self._tell(force=True)

    def _tell(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self.report(self)


def quiet() -> Tracker:
    """A tracker that tells no one (a pull nobody watches)."""
    return Tracker(report=lambda _: None)

"""The long-lived pieces services need besides a session: the profile engine, the caches and
the write intake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from audiences.engines.base import ProfileEngine
from audiences.membership.cache import BitmapCache
from audiences.services.read_cache import ReadCache

if TYPE_CHECKING:  # intake.py imports services that import this module
    from audiences.services.intake import Intake


@dataclass(frozen=True)
class Runtime:
    """Built once per process (``create_app`` or a worker) and handed to the services that read
    or write profile data and membership."""

    profiles: ProfileEngine
    bitmaps: BitmapCache
    reads: ReadCache = field(default_factory=ReadCache)
    intake: Intake | None = None
    """The write intake of JSON membership writes (SQLite servers only; see ``intake.py``)."""

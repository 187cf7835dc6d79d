"""The long-lived pieces services need besides a session: the profile engine and the caches."""

from __future__ import annotations

from dataclasses import dataclass, field

from audiences.engines.base import ProfileEngine
from audiences.membership.cache import BitmapCache
from audiences.services.callers import Caller
from audiences.store.read_cache import ReadCache


@dataclass(frozen=True)
class Runtime:
    """Built once per process (``create_app`` or a worker) and handed to the services that read
    or write profile data and membership."""

    profiles: ProfileEngine
    bitmaps: BitmapCache
    reads: ReadCache[Caller] = field(default_factory=ReadCache)

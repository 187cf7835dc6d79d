"""The long-lived pieces services need besides a session: the profile engine and bitmap cache."""

from __future__ import annotations

from dataclasses import dataclass

from audiences.engines.base import ProfileEngine
from audiences.membership.cache import BitmapCache


@dataclass(frozen=True)
class Runtime:
    """Built once per process (``create_app`` or a worker) and handed to the services that read
    or write profile data and membership."""

    profiles: ProfileEngine
    bitmaps: BitmapCache

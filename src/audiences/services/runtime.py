"""The long-lived pieces services need besides a session: the profile engine and the caches."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from audiences.config import Settings
from audiences.engines import factory
from audiences.engines.base import IdCache, ProfileEngine
from audiences.membership.cache import BitmapCache
from audiences.services.callers import Caller
from audiences.store.profile_writes import ProfileWrites
from audiences.store.read_cache import ReadCache


@dataclass(frozen=True)
class Runtime:
    """Built once per process (``create_app`` or a worker) and handed to the services that read
    or write profile data and membership."""

    profiles: ProfileEngine
    bitmaps: BitmapCache
    reads: ReadCache[Caller] = field(default_factory=ReadCache)
    ids: IdCache | None = field(init=False)
    """The engine's pid cache, when it keeps one (an optional capability)."""

    def __post_init__(self) -> None:
        ids = self.profiles if isinstance(self.profiles, IdCache) else None
        object.__setattr__(self, "ids", ids)  # frozen: set once, here

    def known_pid(self, workspace_id: str, external_id: str) -> int | None:
        """The pid of a profile the engine looked up lately, from memory; None when it does
        not remember it (or keeps no such cache)."""
        return None if self.ids is None else self.ids.known_pid(workspace_id, external_id)


def open_profiles(settings: Settings, metadata: Engine) -> ProfileEngine:
    """The configured profile engine, given the metadata database's coordination of profile
    writes when that is PostgreSQL (``store.profile_writes``): then several processes may
    write one ClickHouse engine. On SQLite metadata one process writes profiles."""
    coordinator = ProfileWrites(metadata) if metadata.dialect.name == "postgresql" else None
    return factory.open_engine(settings, coordinator=coordinator)

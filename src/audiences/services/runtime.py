"""The long-lived pieces services need besides a session: the profile engine and the caches."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from audiences.config import Settings
from audiences.engines import factory
from audiences.engines.base import IdCache, ProfileEngine
from audiences.kit.logs import get_logger
from audiences.membership.cache import BitmapCache
from audiences.services import declarations
from audiences.services.callers import Caller
from audiences.store.profile_writes import ProfileWrites
from audiences.store.read_cache import ReadCache

log = get_logger("audiences.services")


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


def open_runtime(
    settings: Settings,
    metadata: Engine,
    sessions: sessionmaker[Session],
    *,
    reads: ReadCache[Caller] | None = None,
) -> Runtime:
    """The runtime of a process: its profile engine opened, with every column the metadata
    declares made where the engine lacks it (``declarations.restore_columns``), and logged,
    since an engine that lacked them lost or never had the workspace's profile data.

    On PostgreSQL metadata the engine is given the metadata's coordination of profile writes
    (``store.profile_writes``): then several processes may write one ClickHouse engine. On
    SQLite metadata one process writes profiles."""
    coordinator = ProfileWrites(metadata) if metadata.dialect.name == "postgresql" else None
    profiles = factory.open_engine(settings, coordinator=coordinator)
    try:
        with sessions() as session:
            restored = declarations.restore_columns(session, profiles)
    except BaseException:
        profiles.close()
        raise
    for found in restored:
        _report(found, profiles)
    return Runtime(
        profiles=profiles,
        bitmaps=BitmapCache(settings.bitmap_cache_bytes),
        reads=reads if reads is not None else ReadCache(),
    )


def _report(found: declarations.Restored, profiles: ProfileEngine) -> None:
    workspace = found.workspace_id
    if found.made:
        made = "; ".join(f"{kind} {', '.join(names)}" for kind, names in found.made.items())
        log.warning(
            "workspace %s: the profile engine lacked the columns of declared %s; made them "
            "again (it holds %d profiles of this workspace). If its profile data was lost or "
            "replaced, the members stored for its audiences name pids of the old data: the "
            "engine no longer holds them or gives them to other profiles (docs/deploy.md, "
            "'When the profile engine loses its data').",
            workspace,
            made,
            profiles.count(workspace),
        )
    for kind, error in found.failed.items():
        log.error(
            "workspace %s: the profile engine's columns of declared %s could not be checked "
            "at start (%s); the process starts anyway and checks again at its next start.",
            workspace,
            kind,
            error,
        )
    for kind, names in found.mistyped.items():
        for name, (declared, held) in names.items():
            log.error(
                "workspace %s: the profile engine holds %s %r as %s, but it is declared %s; "
                "left as it is (rules on it may fail).",
                workspace,
                kind,
                name,
                held.value,
                declared.value,
            )

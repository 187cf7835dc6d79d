"""What a deployment allows external audiences' sources to name: private addresses, the folder
path sources lie in, the size and time a fetch may take, and the engine's SQL dialect. Checking
sources (``sync_sources``) and fetching them (``sync_fetch``) both read it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class SourceRules:
    """What the deployment allows sources to name, and the engine's SQL dialect."""

    allow_private: bool = False
    root: Path | None = None
    max_bytes: int = 1024**3
    timeout_seconds: float = 60.0
    dialect: str = "duckdb"
    work_dir: Path | None = None
    """Where fetched files are kept while read (default: the system's temporary folder)."""

    def for_workspace(self, workspace_id: str) -> SourceRules:
        """The rules for one workspace's sources: its path sources lie under its own folder,
        ``<AUDIENCES_SYNC_ROOT>/<workspace id>``, so no workspace names another's files."""
        root = None if self.root is None else self.root / workspace_id
        return replace(self, root=root)

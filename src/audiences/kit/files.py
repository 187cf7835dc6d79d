"""Files of the data folder: readable by the owner only, since they hold every profile."""

from __future__ import annotations

from pathlib import Path

PRIVATE_UMASK = 0o077
"""The umask ``audiences`` commands run under: files 0o600, folders 0o700."""
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a folder, made 0o700 if it did not exist (its missing parents too). An
    existing folder keeps its mode: it may be shared, like ``/tmp``."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    return path

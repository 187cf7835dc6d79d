"""Optimistic concurrency: every resource carries a version; writes may name the one they read."""

from __future__ import annotations

from audiences.errors import PreconditionFailed


def check(current: int, expected: int | None) -> None:
    """Raise :class:`PreconditionFailed` unless ``expected`` is absent or equals ``current``."""
    if expected is not None and expected != current:
        raise PreconditionFailed(
            f"the resource is at version {current}, not {expected}; fetch it and retry",
            code="version_mismatch",
        )


def stale() -> PreconditionFailed:
    """The error for a write that lost a race with another writer holding the same version."""
    return PreconditionFailed(
        "the resource was changed by another request; fetch it and retry", code="version_mismatch"
    )

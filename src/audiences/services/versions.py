"""Optimistic concurrency: every resource carries a version; writes may name the one they read."""

from __future__ import annotations

from collections.abc import Collection

from audiences.errors import PreconditionFailed


def check(current: int, expected: Collection[int] | None) -> None:
    """Raise :class:`PreconditionFailed` unless ``expected`` is absent or holds ``current``."""
    if expected is not None and current not in expected:
        wanted = ", ".join(str(v) for v in sorted(expected)) or "none"
        raise PreconditionFailed(
            f"the resource is at version {current}, not {wanted}; fetch it and retry",
            code="version_mismatch",
        )


def stale() -> PreconditionFailed:
    """The error for a write that lost a race with another writer holding the same version."""
    return PreconditionFailed(
        "the resource was changed by another request; fetch it and retry", code="version_mismatch"
    )

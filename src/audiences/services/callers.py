"""Who is calling: the authenticated key, its workspace and role."""

from __future__ import annotations

from dataclasses import dataclass

from audiences.errors import Forbidden
from audiences.schemas.api_keys import ROLE_RANK, Role


@dataclass(frozen=True)
class Caller:
    """An authenticated API key; every service call runs on behalf of one."""

    workspace_id: str
    workspace_slug: str
    key_id: str
    role: Role

    @property
    def actor(self) -> str:
        """How this caller is recorded in ``created_by`` / ``updated_by``."""
        return f"api_key:{self.key_id}"

    def require(self, role: Role) -> None:
        """Raise :class:`Forbidden` unless this caller's role is at least ``role``."""
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise Forbidden(f"this operation needs a key with the {role.value} role")

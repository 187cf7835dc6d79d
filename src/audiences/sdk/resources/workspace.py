"""``/v1/workspace/settings``: how the key's workspace treats what its writes send."""

from __future__ import annotations

from audiences.schemas.workspaces import WorkspaceSettings
from audiences.sdk._call import Call, model
from audiences.sdk._resource import AsyncResource, SyncResource, sends, sends_async

PATH = "/v1/workspace/settings"


class Calls:
    """The requests of the workspace settings."""

    @staticmethod
    def settings() -> Call[WorkspaceSettings]:
        """The workspace's settings."""
        return Call("GET", PATH, model(WorkspaceSettings))

    @staticmethod
    def update_settings(
        *, strict_attributes: bool, event_retention_days: int | None = None
    ) -> Call[WorkspaceSettings]:
        """Replace them all (admin role): a retention left out keeps events forever."""
        body = {
            "strict_attributes": strict_attributes,
            "event_retention_days": event_retention_days,
        }
        return Call("PUT", PATH, model(WorkspaceSettings), json=body)


class Workspace(SyncResource):
    """The key's workspace: ``client.workspace``."""

    settings = sends(Calls.settings)
    update_settings = sends(Calls.update_settings)


class AsyncWorkspace(AsyncResource):
    """The key's workspace: ``client.workspace`` of an :class:`AsyncClient`."""

    settings = sends_async(Calls.settings)
    update_settings = sends_async(Calls.update_settings)

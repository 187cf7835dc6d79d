"""An audience's evaluation runs, newest first."""

from __future__ import annotations

from audiences.schemas.common import Page
from audiences.schemas.memberships import Run
from audiences.sdk._call import Call, clean, endpoint, model
from audiences.sdk.resources._targets import Target, target_id


class Calls:
    """The requests of an audience's runs."""

    @staticmethod
    def list(
        audience: Target,
        *,
        status: str | list[str] | None = None,
        trigger: str | list[str] | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> Call[Page[Run]]:
        """Its runs (default newest first), filtered by status or trigger."""
        params = clean({"status": status, "trigger": trigger, "sort": sort, "limit": limit})
        path = endpoint("/v1/audiences/{}/runs", target_id(audience))
        return Call("GET", path, model(Page[Run]), params=params)

    @staticmethod
    def get(audience: Target, run_id: str) -> Call[Run]:
        """One run."""
        return Call(
            "GET", endpoint("/v1/audiences/{}/runs/{}", target_id(audience), run_id), model(Run)
        )

"""An audience's evaluation runs, newest first."""

from __future__ import annotations

from audiences.schemas.common import Page
from audiences.schemas.memberships import Run
from audiences.sdk._call import Call, Fields, clean, endpoint, reading, reading_page
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
        fields: Fields = None,
        limit: int | None = None,
    ) -> Call[Page[Run]]:
        """Its runs (default newest first), filtered by status or trigger."""
        params = clean({"status": status, "trigger": trigger, "sort": sort, "limit": limit})
        params |= clean({"fields": fields})
        path = endpoint("/v1/audiences/{}/runs", target_id(audience))
        return Call("GET", path, reading_page(Run, fields), params=params)

    @staticmethod
    def get(audience: Target, run_id: str, *, fields: Fields = None) -> Call[Run]:
        """One run (``fields``: only these)."""
        path = endpoint("/v1/audiences/{}/runs/{}", target_id(audience), run_id)
        return Call("GET", path, reading(Run, fields), params=clean({"fields": fields}))

"""Naming an audience on the command line by its key (``vips``) or its id."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audiences.sdk import Client

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def audience_id(client: Client, ref: str) -> str:
    """The id of the audience whose key is ``ref``, else ``ref`` itself (taken as an id). A
    ``ref`` shaped like an id (a UUID) is taken as one without asking."""
    if _key().match(ref) and not _UUID.match(ref):
        page = client.audiences.list(key=ref, limit=1).first_page()
        if page.data:
            return page.data[0].id
    return ref


@cache
def _key() -> re.Pattern[str]:
    from audiences.schemas.audiences import KEY_PATTERN

    return re.compile(KEY_PATTERN)

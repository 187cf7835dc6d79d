"""Naming an audience on the command line by its key (``vips``) or its id."""

from __future__ import annotations

import re

from audiences.schemas.audiences import KEY_PATTERN
from audiences.sdk import Client

_KEY = re.compile(KEY_PATTERN)


def audience_id(client: Client, ref: str) -> str:
    """The id of the audience whose key is ``ref``, else ``ref`` itself (taken as an id)."""
    if _KEY.match(ref):
        page = client.audiences.list(key=ref, limit=1).first_page()
        if page.data:
            return page.data[0].id
    return ref

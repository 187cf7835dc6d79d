"""Workspaces: slugs are checked before anything is stored."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from audiences.errors import ValidationFailed
from audiences.services import workspaces


@pytest.mark.parametrize("slug", ["", "Upper", "has space", "x" * 65, "dot.ted"])
def test_a_slug_outside_the_alphabet_is_invalid_workspace_slug(app: FastAPI, slug: str) -> None:
    with app.state.session_factory() as session, pytest.raises(ValidationFailed) as caught:
        workspaces.ensure(session, slug=slug)
    assert caught.value.code == "invalid_workspace_slug"

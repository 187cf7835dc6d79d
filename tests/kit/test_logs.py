"""Logged exceptions keep their traceback and lose their message, which may hold user data."""

from __future__ import annotations

import doctest
import logging
import uuid

import pytest

from audiences.kit import logs
from audiences.kit.logs import REDACTED, get_logger

SECRET = "row 7: jane.doe@example.com,=cmd|' /C calc'!A0"


def _fail() -> None:
    try:
        int(SECRET)
    except ValueError as exc:
        raise RuntimeError(f"cannot import {SECRET}") from exc


def test_an_exception_is_logged_with_its_types_and_frames_but_no_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = get_logger(f"audiences.test-{uuid.uuid4().hex}")
    with caplog.at_level(logging.ERROR, logger=log.name):
        try:
            _fail()
        except RuntimeError:
            log.exception("job %s failed", "j1")
    assert SECRET not in caplog.text
    assert "job j1 failed" in caplog.text
    assert f"ValueError: {REDACTED}" in caplog.text
    assert f"RuntimeError: {REDACTED}" in caplog.text
    assert "in _fail" in caplog.text
    assert get_logger(log.name).filters == log.filters  # added once


def test_docstring_examples() -> None:
    assert doctest.testmod(logs).failed == 0

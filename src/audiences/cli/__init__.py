"""The ``audiences`` command line: serve the API, manage keys."""

from audiences.cli.main import app, main

__all__ = ["app", "main"]

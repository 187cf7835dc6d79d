"""The ``audiences`` command line: the client commands over the SDK, and ``serve``, ``worker``
and ``keys create --workspace``, which import the server only when they run."""

from audiences.cli.main import app, main

__all__ = ["app", "main"]

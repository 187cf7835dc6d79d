"""Audiences: an open, self-hostable audience engine."""

__version__ = "0.1.0"

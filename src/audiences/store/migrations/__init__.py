"""Alembic migrations of the metadata database, applied at start by :func:`migrate`."""

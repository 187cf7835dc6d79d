"""Metadata store: SQLAlchemy 2 tables, workspace-scoped repositories, Alembic migrations."""

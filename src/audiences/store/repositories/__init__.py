"""Workspace-scoped queries: every statement starts from a base scoped to one workspace."""

"""The queue's tests use the job fixtures: the session's database, unique handler names and a
workspace (see ``tests/jobs/conftest.py``)."""

from tests.jobs.conftest import factory, handler, job_settings, workspace_id

__all__ = ["factory", "handler", "job_settings", "workspace_id"]

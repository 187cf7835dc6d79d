"""What the progress bar says beside a job's rows: the bytes a sync has fetched while its
file comes in, and nothing once its rows are counted."""

from __future__ import annotations

from typing import Any

from audiences.cli.progress import fetching
from audiences.schemas.jobs import Job
from tests.cli.test_interrupt import RUNNING


def job(total: int | None, **counts: int) -> Job:
    """A running sync job with these counts, ``total`` rows once counted."""
    body: dict[str, Any] = {
        **RUNNING,
        "kind": "sync",
        "handler": "membership.sync",
        "progress": {"processed": 0, "total": total},
        "counts": counts,
    }
    return Job.model_validate(body)


def test_the_bar_names_the_bytes_fetched_until_rows_are_counted() -> None:
    assert fetching(job(None, bytes_fetched=1_500_000, bytes_total=3_000_000)) == (
        " fetched 1.5 of 3.0 MB"
    )
    assert fetching(job(None, bytes_fetched=250_000)) == " fetched 0.2 MB"
    assert fetching(job(1000, bytes_fetched=3_000_000, bytes_total=3_000_000)) == ""
    assert fetching(job(None)) == ""  # an import, or a SQL sync

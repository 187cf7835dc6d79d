"""A destination's lease: held by one delivery job at a time (``delivering_job`` and
``delivering_until``), so its messages go out one after another in ``seq`` order."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from audiences.kit.clock import utcnow
from audiences.store.tables import DestinationRow


def claim(session: Session, *, destination_id: str, job_id: str, until: datetime) -> bool:
    """Lease the destination to ``job_id`` until ``until`` unless another job holds it."""
    now = utcnow()
    taken = session.execute(
        update(DestinationRow)
        .where(DestinationRow.id == destination_id)
        .where(
            or_(
                DestinationRow.delivering_job.is_(None),
                DestinationRow.delivering_job == job_id,
                DestinationRow.delivering_until < now,
            )
        )
        .values(delivering_job=job_id, delivering_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(taken, "rowcount", 0))


def renew(
    session: Session, *, destination_id: str, job_id: str, held: datetime, until: datetime
) -> bool:
    """Extend the run's lease to ``until`` if it is still the run's own: the same job and
    the ``held`` it last set (a rerun of the job that took the destination over has set
    another); False when it is lost, and the run must stop sending."""
    renewed = session.execute(
        update(DestinationRow)
        .where(
            DestinationRow.id == destination_id,
            DestinationRow.delivering_job == job_id,
            DestinationRow.delivering_until == held,
        )
        .values(delivering_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(renewed, "rowcount", 0))


def release(session: Session, *, destination_id: str, job_id: str, held: datetime) -> None:
    """End the run's lease on the destination (``held``: the end it last set), unless a
    rerun of the job has taken it over meanwhile."""
    session.execute(
        update(DestinationRow)
        .where(
            DestinationRow.id == destination_id,
            DestinationRow.delivering_job == job_id,
            DestinationRow.delivering_until == held,
        )
        .values(delivering_job=None, delivering_until=None)
        .execution_options(synchronize_session=False)
    )

"""Kept request bodies of JSON membership writes: the sweep removes exactly the ones no live
job will read, once they are old enough."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from audiences.jobs import queue
from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.schemas.jobs import JobKind
from audiences.services import static_members
from audiences.store.tables import JobRow
from tests.factories import Tenant


def kept_body(data_dir: Path, workspace_id: str, job_id: str, age: timedelta) -> Path:
    """A body file named for ``job_id``, last written ``age`` ago."""
    path = static_members.body_file(data_dir, workspace_id, f"{job_id}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"action": "add", "ids": ["a"]}')
    moment = (utcnow() - age).timestamp()
    os.utime(path, (moment, moment))
    return path


def queued_job(session: Session, workspace_id: str) -> str:
    job = queue.enqueue(
        session,
        workspace_id=workspace_id,
        kind=JobKind.IMPORT,
        handler=static_members.WRITE_HANDLER,
        payload={},
    )
    return job.id


def test_the_sweep_keeps_live_and_young_bodies_and_removes_the_rest(
    app: FastAPI, tenant: Tenant, tmp_path: Path
) -> None:
    factory: sessionmaker[Session] = app.state.session_factory
    old, young = timedelta(hours=2), timedelta(minutes=5)
    with factory.begin() as session:
        waiting = queued_job(session, tenant.workspace_id)
        cancelled = queue.cancel(
            session, job=session.get_one(JobRow, queued_job(session, tenant.workspace_id))
        ).id
    bodies = {
        "queued, old": kept_body(tmp_path, tenant.workspace_id, waiting, old),
        "cancelled, old": kept_body(tmp_path, tenant.workspace_id, cancelled, old),
        "no job, old": kept_body(tmp_path, tenant.workspace_id, new_id(), old),
        "no job, young": kept_body(tmp_path, tenant.workspace_id, new_id(), young),
    }
    with factory() as session:
        removed = static_members.sweep_bodies(session, data_dir=tmp_path, now=utcnow())
    assert removed == 2
    assert {name for name, path in bodies.items() if path.exists()} == {
        "queued, old",
        "no job, young",
    }


def test_the_sweep_of_a_data_dir_without_bodies_does_nothing(app: FastAPI, tmp_path: Path) -> None:
    with app.state.session_factory() as session:
        assert static_members.sweep_bodies(session, data_dir=tmp_path, now=utcnow()) == 0

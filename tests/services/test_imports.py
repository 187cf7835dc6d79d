"""Uploaded files: the sweep deletes exactly the uploads no live import will read, once they are
old enough, and keeps their errors files."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.schemas.jobs import JobKind
from audiences.services import imports, static_members
from audiences.store.tables import JobRow
from tests.factories import Tenant


def uploaded(data_dir: Path, workspace_id: str, upload_id: str, age: timedelta) -> Path:
    """An upload with an errors file beside it, last written ``age`` ago."""
    directory = imports.folder(data_dir, workspace_id, upload_id)
    directory.mkdir(parents=True)
    (directory / imports.ERRORS).write_text(imports.ERROR_HEADER)
    upload = directory / imports.UPLOAD
    upload.write_bytes(b"id\na\nb\n")
    moment = (utcnow() - age).timestamp()
    os.utime(upload, (moment, moment))
    return upload


def import_job(session: Session, workspace_id: str, upload_id: str) -> JobRow:
    return queue.enqueue(
        session,
        workspace_id=workspace_id,
        kind=JobKind.IMPORT,
        handler=static_members.IMPORT_HANDLER,
        payload={"upload": upload_id},
    )


def test_the_sweep_keeps_live_and_young_uploads_and_removes_the_rest(
    app: FastAPI, tenant: Tenant, tmp_path: Path
) -> None:
    factory: sessionmaker[Session] = app.state.session_factory
    old, young = timedelta(hours=2), timedelta(minutes=5)
    names = {label: new_id() for label in ("queued", "cancelled", "no job", "young")}
    with factory.begin() as session:
        import_job(session, tenant.workspace_id, names["queued"])
        queue.cancel(session, job=import_job(session, tenant.workspace_id, names["cancelled"]))
    uploads = {
        label: uploaded(tmp_path, tenant.workspace_id, name, young if label == "young" else old)
        for label, name in names.items()
    }
    with factory() as session:
        removed = imports.sweep_uploads(session, data_dir=tmp_path, now=utcnow())
    assert removed == 2
    assert {label for label, path in uploads.items() if path.exists()} == {"queued", "young"}
    assert all((path.parent / imports.ERRORS).exists() for path in uploads.values())


def test_a_swept_upload_without_an_errors_file_leaves_no_folder(
    app: FastAPI, tenant: Tenant, tmp_path: Path
) -> None:
    upload = uploaded(tmp_path, tenant.workspace_id, new_id(), timedelta(hours=2))
    (upload.parent / imports.ERRORS).unlink()
    with app.state.session_factory() as session:
        assert imports.sweep_uploads(session, data_dir=tmp_path, now=utcnow()) == 1
    assert not upload.parent.exists()


def test_the_sweep_of_a_data_dir_without_uploads_does_nothing(app: FastAPI, tmp_path: Path) -> None:
    with app.state.session_factory() as session:
        assert imports.sweep_uploads(session, data_dir=tmp_path, now=utcnow()) == 0

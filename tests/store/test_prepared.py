"""Prepared statements store exactly what SQLAlchemy's own execution stores, on either database."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session, sessionmaker

from audiences.kit.ids import new_id
from audiences.store.prepared import Prepared
from audiences.store.tables import JobRow
from tests.factories import Tenant

# A prepared INSERT runs no column defaults: every column that has one is given.
DEFAULTS = {
    "state": "queued",
    "processed": 0,
    "counts": {},
    "errors": [],
    "error_count": 0,
    "attempts": 0,
    "cancel_requested": False,
}
COLUMNS = (
    "id",
    "workspace_id",
    "kind",
    "handler",
    "payload",
    "max_attempts",
    "run_after",
    "created_at",
    "updated_at",
    *DEFAULTS,
)
INSERT = Prepared(insert(JobRow.__table__).values(dict.fromkeys(COLUMNS)))  # type: ignore[arg-type]
HANDLER_OF = Prepared(select(JobRow.handler).where(JobRow.id == bindparam("job_id")))


def test_a_prepared_insert_reads_back_as_an_orm_insert(app: FastAPI, tenant: Tenant) -> None:
    factory: sessionmaker[Session] = app.state.session_factory
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payload = {"ids": "a\nb", "nested": {"n": 1}, "text": "café"}
    prepared_id, orm_id = new_id(), new_id()
    with factory.begin() as session:
        INSERT.run(
            session.connection(),
            {
                "id": prepared_id,
                "workspace_id": tenant.workspace_id,
                "kind": "import",
                "handler": "membership.write",
                "payload": payload,
                "max_attempts": 3,
                "run_after": moment,
                "created_at": moment,
                "updated_at": moment,
                **DEFAULTS,
            },
        )
        session.add(
            JobRow(
                id=orm_id,
                workspace_id=tenant.workspace_id,
                kind="import",
                handler="membership.write",
                payload=payload,
                max_attempts=3,
                run_after=moment,
                created_at=moment,
                updated_at=moment,
            )
        )
    with factory() as session:
        prepared, orm = session.get_one(JobRow, prepared_id), session.get_one(JobRow, orm_id)
        for column in (*COLUMNS[2:], "total", "result", "lease_owner"):
            assert getattr(prepared, column) == getattr(orm, column), column
        assert prepared.run_after == moment
        found = HANDLER_OF.first(session.connection(), {"job_id": prepared_id})
        assert found is not None and found[0] == "membership.write"
        assert HANDLER_OF.first(session.connection(), {"job_id": "nothing"}) is None

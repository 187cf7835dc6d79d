"""The service around an engine under test: a metadata database (SQLite, in the run's folder),
a workspace with the benchmark's attributes declared, and the 20 audiences as dynamic audiences,
so that ``services.evaluation.refresh_many`` (what a scheduled refresh of a workspace runs) can
be timed on the engine: compile each rule, select its members on the engine, store them.
"""

from __future__ import annotations

from pathlib import Path

from pyroaring import AbstractBitMap
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences.engines.base import ProfileEngine
from audiences.membership.cache import BitmapCache
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.schemas.attributes import AttributeDeclare, AttributeType
from audiences.schemas.audiences import AUDIENCE_WRITE
from audiences.services import api_keys, attributes, audiences, evaluation, memberships, workspaces
from audiences.services.runtime import Runtime
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.tables import AudienceRow
from bench.engines.workload import NOW


class Service:
    """A workspace of the service on ``engine``, with ``rules`` as dynamic audiences."""

    def __init__(
        self,
        engine: ProfileEngine,
        folder: Path,
        schema: dict[str, AttributeType],
        rules: dict[str, str],
    ) -> None:
        self.metadata = make_engine(f"sqlite:///{folder / 'metadata.db'}")
        migrate(self.metadata)
        self.factory: sessionmaker[Session] = make_session_factory(self.metadata)
        self.runtime = Runtime(profiles=engine, bitmaps=BitmapCache())
        self.ids: dict[str, str] = {}
        with self.factory.begin() as session:
            workspace = workspaces.ensure(session, slug="bench", name="Bench")
            _, token = api_keys.create(
                session,
                workspace=workspace,
                data=ApiKeyCreate(name="bench", role=Role.ADMIN),
                actor="bench",
            )
            caller = api_keys.authenticate(session, token)
            self.workspace_id = caller.workspace_id
            for name, kind in schema.items():
                attributes.declare(
                    session,
                    caller=caller,
                    runtime=self.runtime,
                    name=name,
                    data=AttributeDeclare(type=kind),
                )
            for key, rule in rules.items():
                body = {"key": key, "name": key, "kind": "dynamic", "rule": rule}
                row = audiences.create(
                    session, caller=caller, data=AUDIENCE_WRITE.validate_python(body)
                )
                self.ids[key] = row.id

    def refresh_many(self) -> dict[str, AbstractBitMap]:
        """Refresh the 20 audiences in one call, as ``refresh_all`` does, and commit; their
        stored members by key."""
        with self.factory.begin() as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    select(AudienceRow).where(AudienceRow.id.in_(list(self.ids.values())))
                )
            }
            done = evaluation.refresh_many(
                session,
                runtime=self.runtime,
                audiences=[rows[self.ids[key]] for key in self.ids],
                trigger="bench",
                now=NOW,
            )
            assert all(run.status == "succeeded" for run in done), [run.error for run in done]
        with self.factory() as session:  # read back as the service serves them, in one call
            stored = memberships.many(session, runtime=self.runtime, audience_ids=self.ids.values())
        return {key: stored[audience_id] for key, audience_id in self.ids.items()}

    def close(self) -> None:
        """Let go of the metadata database (the engine is closed by its owner)."""
        self.metadata.dispose()

"""API key queries. Lookup by token hash is global (it is how a request finds its workspace)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.store.repositories.listing import ListSpec, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import ApiKeyRow, WorkspaceRow

API_KEY_LIST = ListSpec(
    id_column=ApiKeyRow.id,
    updated_column=ApiKeyRow.created_at,
    sorts={"name": ApiKeyRow.name, "created_at": ApiKeyRow.created_at},
    default_sort="created_at",
    filters={"role": equals(ApiKeyRow.role)},
    search=(ApiKeyRow.name,),
)


class ApiKeyRepository(ScopedRepository[ApiKeyRow]):
    """API keys of one workspace."""

    row = ApiKeyRow
    list_spec = API_KEY_LIST


def find_by_hash(session: Session, token_hash: str) -> tuple[ApiKeyRow, WorkspaceRow] | None:
    """The key with this token hash and its workspace, revoked or not."""
    stmt = (
        select(ApiKeyRow, WorkspaceRow)
        .join(WorkspaceRow, WorkspaceRow.id == ApiKeyRow.workspace_id)
        .where(ApiKeyRow.token_hash == token_hash)
    )
    found = session.execute(stmt).one_or_none()
    return None if found is None else (found[0], found[1])

"""API keys: minting (shown once), authenticating in constant time, listing and revoking."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from audiences.errors import NotFound, Unauthorized
from audiences.kit.clock import utcnow
from audiences.schemas.api_keys import ApiKey, ApiKeyCreate, Role
from audiences.schemas.common import ListQuery, PageResult
from audiences.services.callers import Caller
from audiences.store.read_cache import ReadCache
from audiences.store.repositories.api_keys import ApiKeyRepository, find_by_hash
from audiences.store.tables import ApiKeyRow, WorkspaceRow

TOKEN_PREFIX = "aud_"
PREFIX_CHARS = 12


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session, *, workspace: WorkspaceRow, data: ApiKeyCreate, actor: str | None
) -> tuple[ApiKeyRow, str]:
    """Mint a key: ``aud_`` plus 32 random bytes. Returns the row and the token, shown once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        name=data.name,
        role=data.role.value,
        prefix=token[:PREFIX_CHARS],
        token_hash=hash_token(token),
        created_by=actor,
    )
    ApiKeyRepository(session, workspace.id).add(row)
    return row, token


def cached(reads: ReadCache[Caller], token: str) -> Caller | None:
    """The caller behind a token this process authenticated lately, if still cached."""
    return reads.callers.get(hash_token(token))


def authenticate(session: Session, token: str, *, reads: ReadCache[Caller] | None = None) -> Caller:
    """The caller a bearer token stands for; :class:`Unauthorized` if unknown or revoked.

    With ``reads``, a valid key is remembered there (a revoke in this process forgets it).
    """
    generation = reads.callers.generation if reads is not None else 0
    digest = hash_token(token)
    found = find_by_hash(session, digest) if token.startswith(TOKEN_PREFIX) else None
    # The lookup is by an index on the hash; compare again in constant time so that no
    # code path's timing depends on how much of a guessed token was right.
    if found is None or not hmac.compare_digest(found[0].token_hash, digest):
        raise Unauthorized("unknown API key", code="invalid_api_key")
    key, workspace = found
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", code="revoked_api_key")
    caller = Caller(
        workspace_id=workspace.id, workspace_slug=workspace.slug, key_id=key.id, role=Role(key.role)
    )
    if reads is not None:
        reads.callers.put(digest, caller, generation)
    return caller


def to_model(row: ApiKeyRow, workspace_slug: str) -> ApiKey:
    """The public shape of a key (never its token)."""
    return ApiKey(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        workspace=workspace_slug,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
    )


def get(session: Session, *, caller: Caller, key_id: str) -> ApiKeyRow:
    """One key of the caller's workspace."""
    row = ApiKeyRepository(session, caller.workspace_id).get(key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}")
    return row


def list_(session: Session, *, caller: Caller, query: ListQuery) -> PageResult[ApiKeyRow]:
    """A page of the workspace's keys, revoked ones included."""
    return ApiKeyRepository(session, caller.workspace_id).page(query)


def revoke(session: Session, *, caller: Caller, key_id: str) -> ApiKeyRow:
    """Revoke a key; it answers 401 from now on. Revoking twice is harmless."""
    row = get(session, caller=caller, key_id=key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row

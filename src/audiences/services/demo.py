"""The demo workspace: a few groups and audiences of every kind, and an admin key to try them."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.schemas.audiences import AUDIENCE_WRITE
from audiences.schemas.groups import GroupWrite
from audiences.services import api_keys, audiences, groups, workspaces
from audiences.services.callers import Caller
from audiences.store.repositories.audiences import AudienceRepository
from audiences.store.repositories.groups import GroupRepository

DEMO_SLUG = "demo"
TOKEN_FILE = "demo-api-key.txt"

GROUPS = {
    "Lifecycle": "Where customers are in their journey.",
    "Marketing lists": "Lists uploaded by the marketing team.",
}
AUDIENCES: list[tuple[str | None, dict[str, object]]] = [
    (
        "Lifecycle",
        {
            "key": "us-pro-over-30",
            "name": "US customers over 30 on pro",
            "kind": "dynamic",
            "rule": "country = 'US' AND age >= 30 AND plan = 'pro'",
            "lifecycle_state": "published",
            "labels": ["core"],
            "refresh_policy": {"mode": "scheduled", "interval_seconds": 3600},
        },
    ),
    (
        "Lifecycle",
        {
            "key": "churned",
            "name": "Churned customers",
            "kind": "dynamic",
            "rule": "churned",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Lifecycle",
        {
            "key": "recently-active",
            "name": "Seen in the last 30 days",
            "kind": "dynamic",
            "rule": "last_seen > now() - INTERVAL 30 DAY",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "scheduled", "interval_seconds": 86400},
        },
    ),
    (
        "Marketing lists",
        {
            "key": "webinar-signups",
            "name": "Webinar sign-ups",
            "kind": "static",
            "description": "The list marketing uploaded after the November webinar.",
            "labels": ["marketing"],
            "ttl_days": 90,
        },
    ),
    (
        "Marketing lists",
        {
            "key": "crm-vip",
            "name": "VIPs from the CRM",
            "kind": "external",
            "source": {"name": "crm", "external_id": "list-4711"},
            "labels": ["marketing", "vip"],
        },
    ),
    (
        None,
        {
            "key": "vip-not-churned",
            "name": "VIPs who are not churned",
            "kind": "dynamic",
            "rule": "list_contains(tags, 'vip') AND NOT churned",
            "lifecycle_state": "draft",
        },
    ),
]


def seed(factory: sessionmaker[Session], *, data_dir: Path) -> str:
    """Create the demo workspace once and return an admin token for it.

    The token is kept in ``<data_dir>/demo-api-key.txt`` (mode 0600) so restarts print the same
    key; if that key was revoked, a new one is minted.
    """
    with factory.begin() as session:
        workspace = workspaces.ensure(session, slug=DEMO_SLUG, name="Demo")
        token = _existing_token(session, data_dir)
        if token is None:
            _, token = api_keys.create(
                session,
                workspace=workspace,
                data=ApiKeyCreate(name="demo", role=Role.ADMIN),
                actor="demo",
            )
            _save_token(data_dir, token)
        caller = api_keys.authenticate(session, token)
        _seed_audiences(session, caller)
    return token


def _seed_audiences(session: Session, caller: Caller) -> None:
    group_repo = GroupRepository(session, caller.workspace_id)
    if group_repo.session.scalars(group_repo.base().limit(1)).first() is not None:
        return
    group_ids = {
        name: groups.create(session, caller=caller, data=GroupWrite(name=name, description=text)).id
        for name, text in GROUPS.items()
    }
    repo = AudienceRepository(session, caller.workspace_id)
    for group_name, fields in AUDIENCES:
        if repo.by_key(str(fields["key"])) is None:
            data = AUDIENCE_WRITE.validate_python(
                {**fields, "group_id": group_ids.get(group_name or "")}
            )
            audiences.create(session, caller=caller, data=data)


def _existing_token(session: Session, data_dir: Path) -> str | None:
    path = data_dir / TOKEN_FILE
    if not path.exists():
        return None
    token = path.read_text().strip()
    try:
        api_keys.authenticate(session, token)
    except Exception:
        return None
    return token


def _save_token(data_dir: Path, token: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")

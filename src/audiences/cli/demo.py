"""The demo workspace: 100,000 synthetic profiles with about two million events, audiences of every
kind in groups (behavioural ones among them), and an admin key to try them with. Seeded once;
restarts reuse it."""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from audiences.cli import demo_events
from audiences.cli.demo_profiles import COUNT, SCHEMA, profiles
from audiences.errors import Unauthorized
from audiences.kit.files import private_dir
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.schemas.attributes import AttributeDeclare
from audiences.schemas.audiences import AUDIENCE_WRITE
from audiences.schemas.events import EventPropertyDeclare
from audiences.schemas.groups import GroupWrite
from audiences.services import (
    api_keys,
    attributes,
    audiences,
    evaluation,
    event_properties,
    events,
    groups,
    memberships,
    workspaces,
)
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.repositories.groups import GroupRepository

DEMO_SLUG = "demo"
TOKEN_FILE = "demo-api-key.txt"
PROFILES = COUNT
BATCH = 5_000
EVENT_BATCH = 10_000

GROUPS = {
    "Lifecycle": "Where customers are in their journey.",
    "Plans": "Who pays for what.",
    "Geography": "Where customers are.",
    "Marketing lists": "Lists uploaded by the marketing team.",
    "Behaviour": "Defined by what customers did: orders, visits, sign-ups.",
}
AUDIENCES: list[tuple[str | None, dict[str, Any]]] = [
    (
        "Behaviour",
        {
            "key": "frequent-buyers",
            "name": "Frequent buyers",
            "description": "Three orders or more in the last 90 days.",
            "kind": "dynamic",
            "rule": "count(*) FILTER (WHERE event = 'order'"
            " AND timestamp >= now() - INTERVAL 90 DAY) >= 3",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Behaviour",
        {
            "key": "lapsed-customers",
            "name": "Lapsed customers",
            "description": "Ordered before, but not in the last 60 days.",
            "kind": "dynamic",
            "rule": "max(timestamp) FILTER (WHERE event = 'order') < now() - INTERVAL 60 DAY",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Behaviour",
        {
            "key": "big-spenders-30d",
            "name": "Big spenders this month",
            "description": "Orders worth 200 or more in the last 30 days.",
            "kind": "dynamic",
            "rule": "sum(amount) FILTER (WHERE event = 'order'"
            " AND timestamp >= now() - INTERVAL 30 DAY) >= 200",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Behaviour",
        {
            "key": "pricing-then-signup",
            "name": "Viewed pricing, then signed up within 7 days",
            "kind": "dynamic",
            "rule": "sequence(event = 'pricing_viewed', event = 'signed_up',"
            " within => INTERVAL 7 DAY)",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "scheduled", "interval_seconds": 86400},
        },
    ),
    (
        "Behaviour",
        {
            "key": "never-ordered",
            "name": "Signed up, never ordered",
            "kind": "dynamic",
            "rule": "count(*) FILTER (WHERE event = 'order') = 0"
            " AND count(*) FILTER (WHERE event = 'signed_up') > 0",
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Plans",
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
        "Plans",
        {
            "key": "paying-teams",
            "name": "Team and enterprise plans",
            "kind": "dynamic",
            "rule": {"all": [{"field": "plan", "op": "in", "values": ["team", "enterprise"]}]},
            "lifecycle_state": "published",
            "refresh_policy": {"mode": "streaming"},
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
            "key": "vip",
            "name": "VIPs",
            "kind": "dynamic",
            "rule": "list_contains(tags, 'vip')",
            "lifecycle_state": "published",
            "labels": ["core"],
            "refresh_policy": {"mode": "streaming"},
        },
    ),
    (
        "Lifecycle",
        {
            "key": "vip-not-churned",
            "name": "VIPs who are not churned",
            "kind": "dynamic",
            "rule": "in_audience('vip') AND NOT in_audience('churned')",
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
        "Lifecycle",
        {
            "key": "vip-at-risk",
            "name": "VIPs not seen for two weeks",
            "kind": "dynamic",
            "rule": "in_audience('vip') AND last_seen < now() - INTERVAL 14 DAY",
            "refresh_policy": {"mode": "scheduled", "interval_seconds": 3600},
        },
    ),
    (
        None,
        {
            "key": "high-value",
            "name": "Lifetime value over 1,000",
            "kind": "dynamic",
            "rule": "lifetime_value >= 1000",
            "description": "Evaluated when asked.",
        },
    ),
    (
        "Geography",
        {
            "key": "europe",
            "name": "Customers in Europe",
            "kind": "dynamic",
            "rule": "country IN ('DE', 'FR', 'GB')",
            "lifecycle_state": "published",
        },
    ),
    (
        "Geography",
        {
            "key": "acme-staff",
            "name": "Acme e-mail addresses",
            "kind": "dynamic",
            "rule": "email LIKE '%@acme.com'",
            "lifecycle_state": "draft",
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
            "lifecycle_state": "published",
        },
    ),
    (
        "Marketing lists",
        {
            "key": "crm-vip",
            "name": "VIPs from the CRM",
            "kind": "external",
            "source": {"type": "push", "name": "crm", "external_id": "list-4711"},
            "labels": ["marketing", "vip"],
        },
    ),
]
STATIC_MEMBERS = {"webinar-signups": range(1, PROFILES + 1, 200)}


def seed(
    factory: sessionmaker[Session],
    *,
    runtime: Runtime,
    data_dir: Path,
    profile_count: int = PROFILES,
) -> str:
    """Create the demo workspace once (profiles, audiences, first runs); return an admin token.

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
    with factory.begin() as session:
        if not _seeded(session, caller):
            _seed_workspace(session, caller, runtime, profile_count)
    return token


def _seeded(session: Session, caller: Caller) -> bool:
    repo = GroupRepository(session, caller.workspace_id)
    return session.scalars(repo.base().limit(1)).first() is not None


def _seed_workspace(session: Session, caller: Caller, runtime: Runtime, count: int) -> None:
    for name, kind in SCHEMA.items():
        attributes.declare(
            session, caller=caller, runtime=runtime, name=name, data=AttributeDeclare(type=kind)
        )
    records = profiles(count)
    while chunk := list(itertools.islice(records, BATCH)):
        runtime.profiles.upsert_profiles(caller.workspace_id, chunk)
    _seed_events(session, caller, runtime, count)
    group_ids = {
        name: groups.create(session, caller=caller, data=GroupWrite(name=name, description=text)).id
        for name, text in GROUPS.items()
    }
    created = {}
    for group_name, fields in AUDIENCES:
        data = AUDIENCE_WRITE.validate_python(
            {**fields, "group_id": group_ids.get(group_name or "")}
        )
        created[data.key] = audiences.create(session, caller=caller, data=data)
    for key, numbers in STATIC_MEMBERS.items():
        pids = runtime.profiles.pids_for(caller.workspace_id, [f"user-{n:06d}" for n in numbers])
        memberships.apply(session, audience=created[key], add=[p for p in pids if p is not None])
    evaluation.refresh_all(
        session, runtime=runtime, workspace_id=caller.workspace_id, trigger="demo"
    )


def _seed_events(session: Session, caller: Caller, runtime: Runtime, count: int) -> None:
    """The demo profiles' events, through the one write path of events."""
    for name, kind in demo_events.PROPERTIES.items():
        event_properties.declare(
            session,
            caller=caller,
            runtime=runtime,
            name=name,
            data=EventPropertyDeclare(type=kind),
        )
    limits = events.Limits(max_events=EVENT_BATCH, max_future=timedelta(0))
    stream = demo_events.events(count)
    while chunk := list(itertools.islice(stream, EVENT_BATCH)):
        written = events.write(
            session, workspace_id=caller.workspace_id, runtime=runtime, records=chunk, limits=limits
        )
        refused = [result.errors for result in written if not result.ok]
        if refused:
            raise RuntimeError(f"demo events refused: {refused[:3]}")


def _existing_token(session: Session, data_dir: Path) -> str | None:
    path = data_dir / TOKEN_FILE
    if not path.exists():
        return None
    token = path.read_text().strip()
    try:
        api_keys.authenticate(session, token)
    except Unauthorized:
        return None
    return token


def _save_token(data_dir: Path, token: str) -> None:
    private_dir(data_dir)
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")

"""ORM tables, one class per file, each ending in ``Row``; ``Base.metadata`` is the schema."""

from audiences.store.tables.api_keys import ApiKeyRow
from audiences.store.tables.attempt_totals import AttemptTotalRow
from audiences.store.tables.attributes import AttributeRow
from audiences.store.tables.audiences import AudienceLabelRow, AudienceRow
from audiences.store.tables.base import Base
from audiences.store.tables.destinations import (
    DestinationAttemptRow,
    DestinationCursorRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
    DestinationRow,
)
from audiences.store.tables.events import EventNameRow, EventPropertyRow
from audiences.store.tables.groups import AudienceGroupRow
from audiences.store.tables.idempotency import IdempotencyKeyRow
from audiences.store.tables.jobs import JobRow
from audiences.store.tables.memberships import (
    MembershipChangeRow,
    MembershipDeltaRow,
    MembershipRow,
    RunRow,
)
from audiences.store.tables.profile_writes import ProfileWriteRow
from audiences.store.tables.static_members import MemberDayRow, MemberWriteRow
from audiences.store.tables.syncs import AudienceSyncRow
from audiences.store.tables.workspaces import WorkspaceRow

__all__ = [
    "ApiKeyRow",
    "AttemptTotalRow",
    "AttributeRow",
    "AudienceGroupRow",
    "AudienceLabelRow",
    "AudienceRow",
    "AudienceSyncRow",
    "Base",
    "DestinationAttemptRow",
    "DestinationCursorRow",
    "DestinationMessageBodyRow",
    "DestinationMessageRow",
    "DestinationRow",
    "EventNameRow",
    "EventPropertyRow",
    "IdempotencyKeyRow",
    "JobRow",
    "MemberDayRow",
    "MemberWriteRow",
    "MembershipChangeRow",
    "MembershipDeltaRow",
    "MembershipRow",
    "ProfileWriteRow",
    "RunRow",
    "WorkspaceRow",
]

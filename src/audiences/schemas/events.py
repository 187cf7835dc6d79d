"""Events: what a profile did. The vocabulary shared by the rule language and the profile engines.

An event belongs to one profile, has a ``name`` (``event`` in rules), a ``timestamp`` (an instant,
UTC) and typed ``properties``. A property's type is one per workspace across every event name
(``amount`` is a float wherever it appears), so a rule over several event names reads one type and
an engine can keep each property in one typed column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audiences.schemas.attributes import AttributeType

RESERVED_EVENT_FIELDS = frozenset({"pid", "event", "timestamp", "event_id", "received_at"})
"""Names every stored event has; no property may be named like one of them."""


@dataclass(frozen=True)
class Event:
    """One stored event as rules read it: its name, its time (aware, UTC) and its properties
    (declared properties only, unset ones left out)."""

    name: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventSchema:
    """What rules over events are checked against: the workspace's property types and the
    event names seen so far (an unknown name in a rule is a warning, not an error: its events
    may not have arrived yet)."""

    properties: Mapping[str, AttributeType] = field(default_factory=dict)
    names: frozenset[str] = frozenset()

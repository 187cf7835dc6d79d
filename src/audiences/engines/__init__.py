"""Profile engines: where profile data lives and where compiled rules run as SQL.

``base`` holds the contract every engine implements and the optional capabilities;
``factory`` opens the engine the settings name; ``duckdb`` is the embedded default.
"""

from audiences.engines.base import IdCache, Profile, ProfileEngine, ProfileRecord, UpsertResult

__all__ = ["IdCache", "Profile", "ProfileEngine", "ProfileRecord", "UpsertResult"]

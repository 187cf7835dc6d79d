"""Profile engines: where profile data lives and where compiled rules run as SQL.

``base`` holds the contract every engine implements; ``duckdb`` is the embedded default.
"""

from audiences.engines.base import Profile, ProfileEngine, ProfileRecord, UpsertResult

__all__ = ["Profile", "ProfileEngine", "ProfileRecord", "UpsertResult"]

"""Declarative base and the column types every table shares."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, LargeBinary, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from audiences.kit.clock import as_utc, utcnow
from audiences.kit.ids import new_id

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class PackedText(TypeDecorator[str]):
    """Text kept Zstandard-compressed (a frame of its UTF-8 bytes) and read back as ``str``.

    For large text that repeats itself, written once and read rarely: a webhook message's
    body (~100 KB for 1,000 changes) is mostly the same fields again and again, and packs
    to 1-5 % of its size in about 0.07 ms. Stored as is, SQLite wrote each body to its WAL and
    again at the checkpoint, about half of a delivery run's own CPU (``bench/README.md``,
    "Webhook deliveries")."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else zstd.compress(value.encode())

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else zstd.decompress(value).decode()


class Base(DeclarativeBase):
    """Base of every table; constraint names follow ``NAMING`` so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING)


class IdMixin:
    """A string primary key from :func:`audiences.kit.ids.new_id`."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)


class TimestampsMixin:
    """Creation and last-update times, and who (which API key or actor) made them."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    updated_by: Mapped[str | None] = mapped_column(String(200))

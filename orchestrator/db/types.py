"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Always stored as UTC and always read back timezone-aware.

    SQLite keeps datetimes as text without an offset; without this, values would come back
    naive and compare wrongly with the aware times the clock gives.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # On SQLite, keep the text SQLAlchemy's DATETIME would write ("YYYY-MM-DD
        # HH:MM:SS.ffffff", UTC) but parse it with the C ``fromisoformat`` instead of the
        # dialect's regex: reading timestamps was a visible share of a timer's cost.
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime: parcours stores timezone-aware times only")
        if dialect.name == "sqlite":
            return sqlite_text(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def sqlite_text(value: datetime) -> str:
    """A timestamp as ``UTCDateTime`` stores it on SQLite: naive UTC text. The engine's
    driver-level writes and reads use it too, so every path stores the same text."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def as_utc(value: Any) -> datetime | None:
    """A datetime as ``UTCDateTime`` reads it back, from whatever the driver gave: stored
    text (SQLite, also from aggregates such as ``MIN``/``MAX`` that bypass the column type
    and from driver-level reads), or a naive or aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_utc(text: str) -> datetime:
    """``as_utc`` for stored text that is never NULL."""
    found = as_utc(text)
    assert found is not None
    return found

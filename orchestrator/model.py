"""In-memory views of rows that the engine works on inside one transaction.

``Enrollment`` doubles as the light model the shared ``transitions`` machine moves: it has a
``state`` attribute and slots, so a batch of thousands costs little memory and no machine
bookkeeping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row


def enrollment_id(journey: str, customer_id: str, key: str, cause: str, at: datetime) -> str:
    """Deterministic: the same entering event (``cause``, at the moment it occurred) always
    yields the same enrollment id, so a crashed and re-run batch writes the same rows,
    never a second enrollment.

    The id starts with ``at`` in milliseconds (hex, fixed width, so text order is time
    order) followed by a hash. Ids therefore grow with time, and every index keyed by them
    (the enrollments' primary key, the outbox's idempotency keys, audience memberships)
    takes new rows at its right edge instead of on random pages: with a million live
    enrollments that keeps the pages a batch touches in the cache."""
    raw = "\x1f".join((journey, customer_id, key, cause)).encode()
    ms = max(0, int(at.timestamp() * 1000))
    return f"{ms:011x}" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(slots=True)
class Enrollment:
    id: str
    journey: str
    version: str
    customer_id: str
    key: str
    state: str
    status: str
    entered_at: datetime
    step_entered_at: datetime
    wake_at: datetime | None = None
    wake_trigger: str | None = None
    visits: dict[str, int] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    last_delivery: str | None = None
    arm: str | None = None
    ended_at: datetime | None = None
    exit_reason: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Enrollment:
        """From a full ``enrollments`` row, by position (the table's column order): a
        mapping view per row cost a visible share of a timer on the hot path."""
        (
            eid,
            journey,
            version,
            customer_id,
            key,
            state,
            status,
            wake_at,
            wake_trigger,
            visits,
            context,
            last_delivery,
            arm,
            entered_at,
            step_entered_at,
            ended_at,
            exit_reason,
        ) = tuple(row)
        return cls(
            eid,
            journey,
            version,
            customer_id,
            key,
            state,
            status,
            entered_at,
            step_entered_at,
            wake_at,
            wake_trigger,
            visits or {},
            context or {},
            last_delivery,
            arm,
            ended_at,
            exit_reason,
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "journey": self.journey,
            "version": self.version,
            "customer_id": self.customer_id,
            "key": self.key,
            "state": self.state,
            "status": self.status,
            "entered_at": self.entered_at,
            "step_entered_at": self.step_entered_at,
            "wake_at": self.wake_at,
            "wake_trigger": self.wake_trigger,
            "visits": self.visits,
            "context": self.context,
            "last_delivery": self.last_delivery,
            "arm": self.arm,
            "ended_at": self.ended_at,
            "exit_reason": self.exit_reason,
        }


@dataclass(slots=True)
class Customer:
    id: str
    traits: dict[str, Any] = field(default_factory=dict)
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    consent: dict[str, Any] = field(default_factory=dict)
    is_new: bool = False
    dirty: bool = False

    @classmethod
    def from_row(cls, row: Row[Any]) -> Customer:
        m = row._mapping
        return cls(
            id=m["id"],
            traits=dict(m["traits"] or {}),
            email=m["email"],
            phone=m["phone"],
            timezone=m["timezone"],
            consent=dict(m["consent"] or {}),
        )

    def view(self) -> dict[str, Any]:
        """What conditions see as ``customer``."""
        return {"id": self.id, "timezone": self.timezone, "email": self.email}

    def merge_traits(self, traits: dict[str, Any], timezone: str | None = None) -> None:
        if traits:
            self.traits.update(traits)
            self.dirty = True
        for attr in ("email", "phone"):
            value = traits.get(attr)
            if isinstance(value, str) and value != getattr(self, attr):
                setattr(self, attr, value)
                self.dirty = True
        tz = traits.get("timezone") or timezone
        if isinstance(tz, str) and tz != self.timezone:
            self.timezone = tz
            self.dirty = True


@dataclass(frozen=True, slots=True)
class InboxEvent:
    id: int
    message_id: str
    kind: str
    name: str | None
    customer_id: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    occurred_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> InboxEvent:
        m = row._mapping
        return cls(
            id=m["id"],
            message_id=m["message_id"],
            kind=m["kind"],
            name=m["name"],
            customer_id=m["customer_id"],
            properties=dict(m["properties"] or {}),
            traits=dict(m["traits"] or {}),
            context=dict(m["context"] or {}),
            occurred_at=m["occurred_at"],
        )

"""A unit of work: every row one batch writes, flushed together at the end of its
transaction.

Collecting writes and sending them with ``executemany`` is what lets one process persist
tens of thousands of transitions a second; and because everything lands in the same
transaction, a crash between claim and commit leaves nothing behind to duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, update

from orchestrator.db import tables as t
from orchestrator.db.bulk import Bulk
from orchestrator.model import Customer, Enrollment

_ENROLLMENT_COLUMNS = (
    "id",
    "journey",
    "version",
    "customer_id",
    "key",
    "state",
    "status",
    "entered_at",
    "step_entered_at",
    "wake_at",
    "wake_trigger",
    "visits",
    "context",
    "last_delivery",
    "arm",
    "ended_at",
    "exit_reason",
)
# An enrollment that moved and is still live changes only these columns. Leaving
# ``status`` out of its UPDATE matters: SQLite maintains an index for every UPDATE that
# names one of its columns (the live-key index is partial on ``status``), so naming it
# would rewrite that index entry at every step for nothing.
_ENROLLMENT_MOVES = (
    "state",
    "wake_at",
    "wake_trigger",
    "visits",
    "last_delivery",
    "arm",
    "step_entered_at",
)
_ENROLLMENT_ENDS = (*_ENROLLMENT_MOVES, "status", "ended_at", "exit_reason")
_CUSTOMER_COLUMNS = (
    "id",
    "email",
    "phone",
    "timezone",
    "traits",
    "consent",
    "created_at",
    "updated_at",
)
_MEMBERSHIP_COLUMNS = ("enrollment_id", "channel", "customer_id", "added_at", "removed_at")
_HISTORY_COLUMNS = (
    "enrollment_id",
    "journey",
    "customer_id",
    "from_state",
    "to_state",
    "trigger",
    "at",
)
_DELIVERY_COLUMNS = (
    "idempotency_key",
    "operation",
    "enrollment_id",
    "journey",
    "step",
    "channel",
    "customer_id",
    "template",
    "payload",
    "transactional",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)
_CUSTOMER_UPDATE = (
    update(t.customers)
    .where(t.customers.c.id == bindparam("b_id"))
    .values(
        traits=bindparam("traits"),
        email=bindparam("email"),
        phone=bindparam("phone"),
        timezone=bindparam("timezone"),
        updated_at=bindparam("updated_at"),
    )
)
_MEMBERSHIP_REMOVE = (
    update(t.audience_memberships)
    .where(t.audience_memberships.c.enrollment_id == bindparam("b_enrollment"))
    .where(t.audience_memberships.c.removed_at.is_(None))
    .values(removed_at=bindparam("removed_at"))
)


class CustomerRef:
    """A customer the batch may need: loaded (together with every other pending one, in
    one query) only when a step actually reads traits or the timezone. Most timer steps
    never do, and skipping those rows is a large part of a timer's cost."""

    __slots__ = ("_work", "id")

    def __init__(self, work: Work, customer_id: str) -> None:
        self._work = work
        self.id = customer_id

    def get(self) -> Customer:
        return self._work.customer(self.id)


@dataclass
class Work:
    now: datetime
    new: dict[str, Enrollment] = field(default_factory=dict)
    dirty: dict[str, Enrollment] = field(default_factory=dict)
    #: (enrollment, journey, customer, from, to, trigger); all at ``now``.
    history: list[tuple[str, str, str, str | None, str, str]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)
    removed_memberships: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[str, Customer] = field(default_factory=dict)
    #: (enrollment, channel) pairs whose paid-audience membership ends in this batch.
    removals: list[tuple[Enrollment, str]] = field(default_factory=list)
    transitions: int = 0
    loader: Callable[[list[str]], dict[str, Customer]] | None = None
    _wanted: set[str] = field(default_factory=set)

    def ref(self, customer_id: str) -> CustomerRef:
        if customer_id not in self.customers:
            self._wanted.add(customer_id)
        return CustomerRef(self, customer_id)

    def customer(self, customer_id: str) -> Customer:
        found = self.customers.get(customer_id)
        if found is not None:
            return found
        wanted = sorted(self._wanted | {customer_id})
        self._wanted.clear()
        loaded = self.loader(wanted) if self.loader else {}
        for cid in wanted:
            self.customers.setdefault(cid, loaded.get(cid) or Customer(cid, is_new=True))
        return self.customers[customer_id]

    def touch(self, enr: Enrollment) -> None:
        if enr.id not in self.new:
            self.dirty[enr.id] = enr

    def flush(self, conn: Connection) -> None:
        bulk = Bulk(conn)
        ts, js = bulk.ts, bulk.js
        now = ts(self.now)
        bulk.insert(
            "customers",
            _CUSTOMER_COLUMNS,
            (
                (c.id, c.email, c.phone, c.timezone, js(c.traits), js(c.consent), now, now)
                for c in self.customers.values()
                if c.is_new
            ),
        )
        changed = [c for c in self.customers.values() if c.dirty and not c.is_new]
        if changed:
            conn.execute(
                _CUSTOMER_UPDATE,
                [
                    {
                        "b_id": c.id,
                        "traits": c.traits,
                        "email": c.email,
                        "phone": c.phone,
                        "timezone": c.timezone,
                        "updated_at": self.now,
                    }
                    for c in changed
                ],
            )
        bulk.insert(
            "enrollments",
            _ENROLLMENT_COLUMNS,
            (
                (
                    e.id,
                    e.journey,
                    e.version,
                    e.customer_id,
                    e.key,
                    e.state,
                    e.status,
                    ts(e.entered_at),
                    ts(e.step_entered_at),
                    ts(e.wake_at),
                    e.wake_trigger,
                    js(e.visits),
                    js(e.context),
                    e.last_delivery,
                    e.arm,
                    ts(e.ended_at),
                    e.exit_reason,
                )
                for e in self.new.values()
            ),
        )

        def moves(e: Enrollment) -> tuple[Any, ...]:
            return (
                e.state,
                ts(e.wake_at),
                e.wake_trigger,
                js(e.visits),
                e.last_delivery,
                e.arm,
                ts(e.step_entered_at),
            )

        live = [e for e in self.dirty.values() if e.status == "live"]
        ended = [e for e in self.dirty.values() if e.status != "live"]
        bulk.update("enrollments", _ENROLLMENT_MOVES, "id", ((*moves(e), e.id) for e in live))
        bulk.update(
            "enrollments",
            _ENROLLMENT_ENDS,
            "id",
            ((*moves(e), e.status, ts(e.ended_at), e.exit_reason, e.id) for e in ended),
        )
        bulk.insert(
            "history",
            _HISTORY_COLUMNS,
            ((*h, now) for h in self.history),
        )
        bulk.insert(
            "deliveries",
            _DELIVERY_COLUMNS,
            (
                (
                    d["idempotency_key"],
                    d["operation"],
                    d["enrollment_id"],
                    d["journey"],
                    d["step"],
                    d["channel"],
                    d["customer_id"],
                    d["template"],
                    js(d["payload"]),
                    d["transactional"],
                    d["status"],
                    d["attempts"],
                    ts(d["next_attempt_at"]),
                    ts(d["created_at"]),
                )
                for d in self.deliveries
            ),
        )
        bulk.insert(
            "audience_memberships",
            _MEMBERSHIP_COLUMNS,
            (
                (
                    m["enrollment_id"],
                    m["channel"],
                    m["customer_id"],
                    ts(m["added_at"]),
                    ts(m["removed_at"]),
                )
                for m in self.memberships
            ),
        )
        if self.removed_memberships:
            conn.execute(_MEMBERSHIP_REMOVE, self.removed_memberships)

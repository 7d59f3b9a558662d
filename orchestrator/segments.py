"""Segment membership as events: ``segment.entered`` and ``segment.exited``.

A named segment (``[segments]`` in the configuration, or ``segments:`` in a journey file) is
a condition over traits and event history. Conditions already read segments with
``segment('vip')``; this module lets a journey *start* when someone joins one::

    entry:
      event: segment.entered
      where: properties.segment == 'vip'

Why stored membership rather than comparing "before" and "after" an event: by the time an
event is applied it is already in the history the condition reads, so "before" cannot be
recomputed honestly; and a stored row also says since when a customer is in a segment.
The ``segment_memberships`` table holds one row per (customer, segment) the customer is in.

When an event could change a segment (an identify or traits can change any segment; a
track event only the segments whose conditions count that event, directly or through
``segment()``), the watch re-evaluates those segments, updates the rows, and writes an
internal event per change into the inbox in the same transaction. The inbox worker applies
it like any other event, in order, so a journey's entry, goal, exit and waits can all use
it. The message id is derived from the causing event, so a re-run batch writes nothing
twice.

None of this runs unless some current journey listens for ``segment.entered`` or
``segment.exited``: evaluating history conditions costs queries, and the event hot path
must not pay for a feature nobody uses.

A segment that changes with the mere passing of time (``days_since(...) > 30`` becomes
true without any event; ``count(..., within='30d') == 0`` as the last one ages out) is
caught by a sweep: every ``workers.segment_sweep_interval`` the daemon re-evaluates the
segments that read event history for every customer, in pages, and announces the changes
the same way (``Engine.sweep_segments``). Such a change is therefore seen at most one
interval late; a customer's next event sees it at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, true

from journeys import JourneyVersion, Scope
from journeys.conditions import Condition, PastEvent, StaticScope
from journeys.schema import WaitStep
from orchestrator.db import tables as t
from orchestrator.db.sql import upsert
from orchestrator.model import Customer, InboxEvent

ENTERED = "segment.entered"
#: Most events a sweep reads into memory for one customer (see ``page_scopes``).
PREFETCH_LIMIT = 5000
EXITED = "segment.exited"
SEGMENT_EVENTS = frozenset({ENTERED, EXITED})

ScopeMaker = Callable[[Connection, Customer, Mapping[str, Any], "str | None"], Scope]


def listens(version: JourneyVersion) -> bool:
    """Whether a journey reacts to segment membership events anywhere (entry, goal, exit,
    a wait)."""
    j = version.definition
    names = {j.entry.event, j.goal.event if j.goal else None, *(m.event for m in j.exit_on)}
    for step in j.steps:
        if isinstance(step, WaitStep):
            names.update(m.event for m in step.for_)
    return bool(names & SEGMENT_EVENTS)


class SegmentWatch:
    """Keeps ``segment_memberships`` current and turns changes into inbox events."""

    def __init__(self, segments: Mapping[str, Condition]) -> None:
        self.segments = dict(segments)
        self.active = False
        self._events = {name: self._depends_on(name, set()) for name in self.segments}
        #: Segments that count events (directly or through other segments): the ones that
        #: can change as time passes, without any event.
        self.timed = sorted(n for n, events in self._events.items() if events)

    def listen(self, versions: Iterable[JourneyVersion]) -> None:
        """Switch the watch on when some journey uses segment events (engine reindex)."""
        self.active = bool(self.segments) and any(listens(v) for v in versions)

    def _depends_on(self, name: str, seen: set[str]) -> frozenset[str]:
        """Events a segment's condition counts, including through segments it names."""
        cond = self.segments.get(name)
        if cond is None or name in seen:
            return frozenset()
        seen.add(name)
        out = set(cond.events)
        for other in cond.segments:
            out |= self._depends_on(other, seen)
        return frozenset(out)

    def page_scopes(
        self, conn: Connection, customers: Iterable[Customer], now: datetime
    ) -> tuple[dict[str, Scope], dict[str, set[str]]]:
        """For a sweep page: each customer's scope over their history of the events the
        timed segments count (one query for the page, not one per customer and segment),
        and their stored memberships of those segments (one more query). Customers with
        more than ``PREFETCH_LIMIT`` such events get no scope: evaluate them per query."""
        people = {c.id: c for c in customers}
        ids = sorted(people)
        names = sorted(set().union(*(self._events[n] for n in self.timed)))
        e, m = t.events.c, t.segment_memberships.c
        past: dict[str, list[PastEvent]] = {i: [] for i in ids}
        stored: dict[str, set[str]] = {i: set() for i in ids}
        heavy: set[str] = set()
        for lo in range(0, len(ids), 900):
            chunk = ids[lo : lo + 900]
            relevant = (e.customer_id.in_(chunk), e.name.in_(names), e.occurred_at <= now)
            # A customer with a huge history (a bot, a load test) is left to the per-query
            # path: the page must never hold more than about PREFETCH_LIMIT events each.
            heavy.update(
                conn.execute(
                    select(e.customer_id)
                    .where(*relevant)
                    .group_by(e.customer_id)
                    .having(func.count() > PREFETCH_LIMIT)
                ).scalars()
            )
            rows = conn.execute(
                select(e.customer_id, e.name, e.occurred_at, e.properties).where(
                    *relevant, e.customer_id.not_in(heavy) if heavy else true()
                )
            )
            for r in rows:
                past[r.customer_id].append(PastEvent(r.name, r.occurred_at, r.properties or {}))
            members = conn.execute(
                select(m.customer_id, m.segment).where(
                    m.customer_id.in_(chunk), m.segment.in_(self.timed)
                )
            )
            for cid, segment in members:
                stored[cid].add(segment)
        scopes = {i: self._scope(people[i], past[i], now) for i in ids if i not in heavy}
        return scopes, stored

    def _scope(self, customer: Customer, past: list[PastEvent], now: datetime) -> Scope:
        history = StaticScope(past, now)
        scope = Scope(traits=customer.traits, customer=customer.view(), history=history)
        depth = [0]

        def member(name: str) -> Callable[[], bool]:
            def check() -> bool:
                cond = self.segments.get(name)
                if cond is None or depth[0] > 8:  # as DbHistory: no endless recursion
                    return False
                depth[0] += 1
                try:
                    return cond(scope)
                finally:
                    depth[0] -= 1

            return check

        history.segments = {name: member(name) for name in self.segments}
        return scope

    def unrecorded(self, conn: Connection) -> frozenset[str]:
        """Timed segments no full sweep has recorded yet for their current condition."""
        b = t.segment_baselines.c
        done = {
            r.segment: r.condition
            for r in conn.execute(select(b.segment, b.condition).where(b.segment.in_(self.timed)))
        }
        return frozenset(n for n in self.timed if done.get(n) != self.segments[n].source)

    def record_baselines(self, conn: Connection, names: Iterable[str], now: datetime) -> None:
        upsert(
            conn,
            t.segment_baselines,
            [
                {"segment": n, "condition": self.segments[n].source, "recorded_at": now}
                for n in names
            ],
            keys=["segment"],
            update=["condition", "recorded_at"],
        )

    def affected(self, ev: InboxEvent) -> list[str]:
        """The segments this event may change."""
        if ev.name in SEGMENT_EVENTS:
            return []
        if ev.kind == "identify" or ev.traits:
            return sorted(self.segments)
        return sorted(n for n, events in self._events.items() if ev.name in events)

    def observe(
        self,
        conn: Connection,
        customer: Customer,
        ev: InboxEvent,
        make_scope: ScopeMaker,
        now: datetime,
    ) -> list[tuple[str, str]]:
        """Re-evaluate the segments ``ev`` may change for ``customer``; record and announce
        the changes. Returns them as (event name, segment) for logs and tests."""
        if not self.active:
            return []
        names = self.affected(ev)
        if not names:
            return []
        return self.reconcile(
            conn, customer, names, make_scope, now, cause=ev.message_id, at=ev.occurred_at
        )

    def reconcile(
        self,
        conn: Connection,
        customer: Customer,
        names: Iterable[str],
        make_scope: ScopeMaker,
        now: datetime,
        *,
        cause: str,
        at: datetime,
        silent: frozenset[str] = frozenset(),
        stored: set[str] | None = None,
        scope: Scope | None = None,
    ) -> list[tuple[str, str]]:
        """Evaluate ``names`` for ``customer`` against the stored membership; record the
        differences and write one inbox event per change, with a message id derived from
        ``cause`` (the event, or the sweep) so a re-run writes nothing twice. Changes of
        ``silent`` segments are recorded but not announced (a sweep's baseline). A sweep
        passes the ``stored`` memberships and a ``scope`` over prefetched history it read
        for a whole page at once."""
        names = list(names)
        m = t.segment_memberships.c
        if stored is None:
            stored = {
                r.segment
                for r in conn.execute(
                    select(m.segment).where(m.customer_id == customer.id, m.segment.in_(names))
                )
            }
        if scope is None:
            scope = make_scope(conn, customer, {}, None)
        now_in = {n for n in names if self.segments[n](scope)}
        entered, exited = sorted(now_in - stored), sorted(stored - now_in)
        if not entered and not exited:
            return []
        upsert(
            conn,
            t.segment_memberships,
            [{"customer_id": customer.id, "segment": n, "entered_at": now} for n in entered],
            keys=["customer_id", "segment"],
            update=[],
        )
        if exited:
            conn.execute(
                delete(t.segment_memberships).where(
                    m.customer_id == customer.id, m.segment.in_(exited)
                )
            )
        changes = [(ENTERED, n) for n in entered if n not in silent] + [
            (EXITED, n) for n in exited if n not in silent
        ]
        if not changes:
            return []
        upsert(
            conn,
            t.events,
            [
                {
                    "message_id": _message_id(cause, customer.id, name, segment),
                    "kind": "internal",
                    "name": name,
                    "customer_id": customer.id,
                    "anonymous_id": None,
                    "properties": {"segment": segment, "cause": cause},
                    "traits": {},
                    "context": {},
                    "occurred_at": at,
                    "received_at": now,
                }
                for name, segment in changes
            ],
            keys=["message_id"],
            update=[],
        )
        return changes


def _message_id(cause: str, customer: str, name: str, segment: str) -> str:
    raw = "\x1f".join((cause, customer, name, segment)).encode()
    return f"{name}:{hashlib.sha256(raw).hexdigest()[:40]}"


__all__ = ["ENTERED", "EXITED", "SEGMENT_EVENTS", "SegmentWatch", "listens"]

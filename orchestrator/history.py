"""Event history for conditions (``count``, ``days_since``, ``segment``), read from the
events table on demand: a condition that never asks about history costs no query."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from journeys import Scope
from journeys.conditions import Condition
from orchestrator.db import tables as t
from orchestrator.db.types import as_utc

if TYPE_CHECKING:
    from orchestrator.model import Customer

ScopeFactory = Callable[[Connection, "Customer", Mapping[str, Any], "str | None"], Scope]


class DbHistory:
    """``HistoryScope`` over the events table for one customer."""

    def __init__(
        self,
        conn: Connection,
        customer: Customer,
        now: datetime,
        segments: Mapping[str, Condition],
        make_scope: ScopeFactory,
    ) -> None:
        self.conn = conn
        self.customer = customer
        self.now = now
        self.segments = segments
        self.make_scope = make_scope
        self._depth = 0

    def count_events(
        self,
        name: str,
        within: timedelta | None,
        where: Callable[[Mapping[str, Any]], bool] | None,
    ) -> int:
        e = t.events.c
        base = [e.customer_id == self.customer.id, e.name == name, e.occurred_at <= self.now]
        if within is not None:
            base.append(e.occurred_at >= self.now - within)
        if where is None:
            return int(self.conn.execute(select(func.count()).where(*base)).scalar_one())
        rows = self.conn.execute(select(e.properties).where(*base))
        return sum(1 for r in rows if where(r.properties or {}))

    def days_since(self, name: str) -> float | None:
        e = t.events.c
        last = self.conn.execute(
            select(func.max(e.occurred_at)).where(
                e.customer_id == self.customer.id, e.name == name, e.occurred_at <= self.now
            )
        ).scalar_one()
        at = as_utc(last)
        if at is None:
            return None
        return (self.now - at).total_seconds() / 86400

    def in_segment(self, name: str) -> bool:
        cond = self.segments.get(name)
        if cond is None or self._depth > 8:
            return False
        self._depth += 1
        try:
            return cond(self.make_scope(self.conn, self.customer, {}, None))
        finally:
            self._depth -= 1

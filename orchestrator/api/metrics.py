"""Prometheus metrics, computed from the database when scraped.

Queue depths and lag are facts of the database, not of one process: with several replicas
any of them can be scraped and tell the same story. Each figure is one query served by an
index (``ix_events_pending``, ``ix_deliveries_due``, ``ix_enrollments_due``, primary keys),
except deliveries by channel and status, a grouped scan; all of them are cached for
``CACHE_SECONDS`` so frequent scrapes (or several Prometheus servers) cost one round.

Totals of events and transitions are the highest row ids: the inbox and the history only
grow (erasure blanks rows, it does not delete them), so ``max(id)`` is a counter that costs
one index lookup instead of counting millions of rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from orchestrator.api.state import ApiState
from orchestrator.db import tables as t

CACHE_SECONDS = 5.0


@dataclass
class Snapshot:
    events_total: int = 0
    transitions_total: int = 0
    unprocessed_events: int = 0
    pending_deliveries: int = 0
    due_deliveries: int = 0
    timer_lag_seconds: float = 0.0
    due_timers: int = 0
    live_by_journey: dict[str, int] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)


def snapshot(state: ApiState) -> Snapshot:
    now = state.runtime.clock.now()
    ev, h, d, en = t.events.c, t.history.c, t.deliveries.c, t.enrollments.c
    s = Snapshot()
    with state.reader.connect() as conn:
        s.events_total = conn.execute(select(func.max(ev.id))).scalar() or 0
        s.transitions_total = conn.execute(select(func.max(h.id))).scalar() or 0
        s.unprocessed_events = (
            conn.execute(
                select(func.count()).select_from(t.events).where(ev.processed_at.is_(None))
            ).scalar()
            or 0
        )
        pending = d.status.in_(("pending", "sending"))
        s.pending_deliveries = (
            conn.execute(select(func.count()).select_from(t.deliveries).where(pending)).scalar()
            or 0
        )
        s.due_deliveries = (
            conn.execute(
                select(func.count())
                .select_from(t.deliveries)
                .where(pending, d.next_attempt_at <= now)
            ).scalar()
            or 0
        )
        due = (en.status == "live", en.wake_at.is_not(None), en.wake_at <= now)
        oldest = conn.execute(select(func.min(en.wake_at)).where(*due)).scalar()
        s.due_timers = (
            conn.execute(select(func.count()).select_from(t.enrollments).where(*due)).scalar() or 0
        )
        s.timer_lag_seconds = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
        for r in conn.execute(
            select(en.journey, func.count().label("n"))
            .where(en.status == "live")
            .group_by(en.journey)
        ):
            s.live_by_journey[r.journey] = r.n
        for r in conn.execute(
            select(d.channel, d.status, func.count().label("n")).group_by(d.channel, d.status)
        ):
            s.deliveries[(r.channel, r.status)] = r.n
    return s


class DatabaseCollector(Collector):
    def __init__(self, state: ApiState, ttl: float = CACHE_SECONDS) -> None:
        self._state = state
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, Snapshot] | None = None

    def current(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl:
                self._cached = (now, snapshot(self._state))
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        s = self.current()
        c = self._state.counters
        yield CounterMetricFamily(
            "parcours_events",
            "Events written to the inbox (all sources, all replicas).",
            value=s.events_total,
        )
        yield CounterMetricFamily(
            "parcours_transitions",
            "State transitions recorded in the history.",
            value=s.transitions_total,
        )
        yield GaugeMetricFamily(
            "parcours_inbox_unprocessed",
            "Events waiting for the inbox worker.",
            value=s.unprocessed_events,
        )
        yield GaugeMetricFamily(
            "parcours_outbox_pending",
            "Deliveries pending or being sent.",
            value=s.pending_deliveries,
        )
        yield GaugeMetricFamily(
            "parcours_outbox_due",
            "Deliveries whose next attempt is due now.",
            value=s.due_deliveries,
        )
        yield GaugeMetricFamily(
            "parcours_timers_due", "Live enrollments whose timer is due.", value=s.due_timers
        )
        yield GaugeMetricFamily(
            "parcours_timer_lag_seconds",
            "Now minus the oldest due wake_at (0 when no timer is overdue).",
            value=s.timer_lag_seconds,
        )
        live = GaugeMetricFamily(
            "parcours_enrollments_live", "Live enrollments per journey.", labels=["journey"]
        )
        for journey, n in sorted(s.live_by_journey.items()):
            live.add_metric([journey], n)
        yield live
        deliveries = GaugeMetricFamily(
            "parcours_deliveries",
            "Outbox rows by channel and status.",
            labels=["channel", "status"],
        )
        for (channel, status), n in sorted(s.deliveries.items()):
            deliveries.add_metric([channel, status], n)
        yield deliveries
        with c.lock:
            accepted, duplicates, reactions = c.accepted, c.duplicates, dict(c.reactions)
        yield CounterMetricFamily(
            "parcours_api_events_ingested",
            "Events accepted by this process's ingest endpoints.",
            value=accepted,
        )
        yield CounterMetricFamily(
            "parcours_api_events_duplicate",
            "Ingested events ignored as duplicates (messageId seen before).",
            value=duplicates,
        )
        reacted = CounterMetricFamily(
            "parcours_api_reactions", "Reactions recorded by this process.", labels=["event"]
        )
        for event, n in sorted(reactions.items()):
            reacted.add_metric([event], n)
        yield reacted
        buffer = self._state.pending_impressions
        yield GaugeMetricFamily(
            "parcours_api_site_impressions_pending",
            "Site impressions buffered in this process, not yet written.",
            value=len(buffer),
        )
        yield CounterMetricFamily(
            "parcours_api_site_impressions_dropped",
            "Site impressions lost: the buffer was full or the database down at shutdown.",
            value=buffer.dropped,
        )


def build_registry(state: ApiState) -> tuple[CollectorRegistry, DatabaseCollector]:
    """A registry per application (not the global one), so several apps in one process
    (tests, embedding) never clash."""
    registry = CollectorRegistry(auto_describe=False)
    collector = DatabaseCollector(state)
    registry.register(collector)
    return registry, collector

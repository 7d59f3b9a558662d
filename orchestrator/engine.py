"""The engine: moves customers through journeys, one transaction per batch.

Three entry points do all the work, each claiming a batch, applying it in memory on the
shared state machines, and writing every effect in the same transaction:

* ``process_inbox``: events in order of occurrence per customer. Identify merges traits;
  goals and exit events end live enrollments at once, from any step; reactions fire on
  waits; entry events enroll (re-entry policy and keys respected).
* ``fire_due_timers``: enrollments whose ``wake_at`` has come (wait timeouts, delays).
* ``enroll`` / ``cancel`` / ``enroll_scheduled``: by hand, by API, by cron.

Entering a step writes its effects with it: a delivery row in the outbox (key derived from
enrollment, step and visit), the next ``wake_at``, a history line, and on exit the removal
from any paid audience the customer joined.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, func, select, text, update
from sqlalchemy import Engine as SqlEngine

from journeys import JourneyVersion, Scope
from journeys.compiler import CANCEL, CONVERT, CONVERTED, LEAVE, TERMINALS
from journeys.conditions import Condition
from journeys.schema import (
    DelayStep,
    EventMatch,
    ExitStep,
    ExperimentStep,
    SendStep,
    SplitStep,
    WaitStep,
)
from orchestrator.clock import Clock
from orchestrator.db import tables as t
from orchestrator.db.reads import enrollments_where
from orchestrator.db.sql import claim_rows, lock_customers, lock_rows
from orchestrator.db.types import sqlite_text
from orchestrator.history import DbHistory
from orchestrator.model import Customer, Enrollment, InboxEvent, enrollment_id
from orchestrator.notify import INBOX, OUTBOX, notify
from orchestrator.policies import record_consent
from orchestrator.segments import SegmentWatch
from orchestrator.timewindows import next_open, quiet_until, sticky_fraction, zone
from orchestrator.versions import VersionRegistry
from orchestrator.work import CustomerRef, Work

log = structlog.get_logger("parcours.engine")

MAX_HOPS = 200
#: The moment in ids whose cause is given by a caller (see ``Engine.enroll``).
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)
TERMINAL_REASONS = {CONVERTED: "converted"}


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """What the engine needs to know of a channel: owned or paid, and its medium."""

    kind: str
    medium: str


class EngineError(Exception):
    """A request the engine cannot carry out; the message says why."""


class Engine:
    """Applies events, timers and manual actions to enrollments."""

    def __init__(
        self,
        db: SqlEngine,
        registry: VersionRegistry,
        clock: Clock,
        channels: Mapping[str, ChannelFacts],
        *,
        segments: Mapping[str, Condition] | None = None,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.registry = registry
        self.clock = clock
        self.channels = dict(channels)
        self.segments = dict(segments or {})
        self.batch_size = batch_size
        self._entry_index: dict[str, list[JourneyVersion]] = {}
        self._goal_index: set[str] = set()
        #: Per journey version: its send steps on paid channels, (step, channel).
        self._paid_steps: dict[str, list[tuple[str, str]]] = {}
        self.segment_watch = SegmentWatch(self.segments)
        self.reindex()

    def reindex(self) -> None:
        """Index current journeys by entry event, so an event costs a dict lookup."""
        self._entry_index = defaultdict(list)
        for v in self.registry.current.values():
            if v.definition.entry.event:
                self._entry_index[v.definition.entry.event].append(v)
        self.segment_watch.listen(self.registry.current.values())

    # -- public entry points -------------------------------------------------------------
    def process_inbox(self, limit: int | None = None) -> int:
        """Apply one batch of unprocessed events; return how many were processed."""
        limit = limit or self.batch_size
        with self.db.begin() as conn:
            now = self.clock.now()
            rows = claim_rows(
                conn,
                select(t.events)
                .where(t.events.c.processed_at.is_(None))
                .order_by(t.events.c.id)
                .limit(limit),
            )
            if not rows:
                return 0
            if conn.dialect.name == "postgresql":
                rows = self._own_customers(conn, rows)
                if not rows:
                    return 0
            events = [InboxEvent.from_row(r) for r in rows]
            work = self._work(conn, now)
            by_customer: dict[str, list[InboxEvent]] = defaultdict(list)
            for ev in events:
                by_customer[ev.customer_id].append(ev)
            self._load_customers(conn, work, by_customer)
            live = self._load_live(conn, by_customer)
            past = self._load_past_entries(conn, events, by_customer)
            errors: dict[int, str] = {}
            for cid, evs in by_customer.items():
                evs.sort(key=lambda e: (e.occurred_at, e.id))
                customer = work.customers[cid]
                for ev in evs:
                    try:
                        self._apply_event(conn, work, customer, live[cid], past, ev)
                    except Exception as exc:  # one bad event must not block the inbox
                        log.exception("event failed", message_id=ev.message_id, customer=cid)
                        errors[ev.id] = f"{type(exc).__name__}: {exc}"
            self._flush(conn, work)
            conn.execute(
                update(t.events)
                .where(t.events.c.id.in_([e.id for e in events]))
                .values(processed_at=now)
            )
            for eid, message in errors.items():
                conn.execute(update(t.events).where(t.events.c.id == eid).values(error=message))
            return len(events)

    def _own_customers(self, conn: Connection, rows: Sequence[Any]) -> list[Any]:
        """Replicas on PostgreSQL: one customer's events are applied by one worker at a time,
        in order. Take a transaction-scoped advisory lock per customer of the claimed batch
        (skipping customers another worker holds), then read each owned customer's whole
        pending backlog in order, waiting for rows another worker claimed but dropped."""
        owned = lock_customers(conn, (r.customer_id for r in rows), wait=False)
        if not owned:
            return []
        e = t.events.c
        return list(
            conn.execute(
                select(t.events)
                .where(e.customer_id.in_(owned), e.processed_at.is_(None))
                .order_by(e.id)
                .with_for_update()
            ).all()
        )

    def fire_due_timers(self, limit: int | None = None) -> int:
        """Fire one batch of due timers (ordered by ``wake_at``); return how many fired."""
        limit = limit or self.batch_size
        with self.db.begin() as conn:
            now = self.clock.now()
            enrs = self._claim_due(conn, now, limit)
            if not enrs:
                return 0
            work = self._work(conn, now)
            for enr in enrs:
                trigger = enr.wake_trigger or "timeout"
                version = self.registry.get(conn, enr.version)
                enr.wake_at = None
                enr.wake_trigger = None
                self._fire(work, version, enr, trigger)
                self._settle(conn, work, version, enr, work.ref(enr.customer_id))
            self._flush(conn, work)
            return len(enrs)

    def _claim_due(self, conn: Connection, now: datetime, limit: int) -> list[Enrollment]:
        """The next ``limit`` live enrollments whose ``wake_at`` has come, oldest first
        (skipping paused journeys); locked with SKIP LOCKED on PostgreSQL."""
        paused = sorted(self.registry.paused)
        if conn.dialect.name == "sqlite":
            not_paused = f" AND journey NOT IN ({', '.join('?' * len(paused))})" if paused else ""
            return enrollments_where(
                conn,
                "status = 'live' AND wake_at IS NOT NULL AND wake_at <= ?" + not_paused,
                [sqlite_text(now), *paused, limit],
                tail="ORDER BY wake_at LIMIT ?",
            )
        q = (
            select(t.enrollments)
            .where(t.enrollments.c.status == "live")
            .where(t.enrollments.c.wake_at.is_not(None))
            .where(t.enrollments.c.wake_at <= now)
            .order_by(t.enrollments.c.wake_at)
            .limit(limit)
        )
        if paused:
            q = q.where(t.enrollments.c.journey.not_in(paused))
        return [Enrollment.from_row(r) for r in claim_rows(conn, q)]

    def run_until_idle(self, max_rounds: int = 1_000_000) -> int:
        """Process the inbox and due timers until neither has work (tests, simulation)."""
        total = 0
        for _ in range(max_rounds):
            n = self.process_inbox() + self.fire_due_timers()
            total += n
            if n == 0:
                return total
        return total

    def enroll(
        self,
        journey: str,
        customer_id: str,
        *,
        key: str = "",
        context: Mapping[str, Any] | None = None,
        cause: str | None = None,
    ) -> str | None:
        """Enroll a customer by hand (CLI/API). Returns the enrollment id, or None when the
        re-entry policy or a live enrollment with the same key refuses it."""
        version = self.registry.current.get(journey)
        if version is None:
            raise EngineError(
                f"no journey named {journey!r}; journeys are: "
                f"{', '.join(sorted(self.registry.current))}"
            )
        with self.db.begin() as conn:
            now = self.clock.now()
            # A caller's cause (the API's messageId) makes a retry enroll once: its id must
            # not depend on when the retry arrives, so it carries no time prefix, and an
            # enrollment already made for it is the answer.
            at = now if cause is None else _NO_TIME
            if cause is not None:
                lock_customers(conn, [customer_id], wait=True)  # a concurrent retry waits
                eid = enrollment_id(version.name, customer_id, key, cause, at)
                found = conn.execute(
                    select(t.enrollments.c.id).where(t.enrollments.c.id == eid)
                ).scalar_one_or_none()
                if found is not None:
                    return str(found)
            work = self._work(conn, now)
            self._load_customers(conn, work, {customer_id: []})
            live = self._load_live(conn, {customer_id: []})[customer_id]
            past = self._past_for(conn, [customer_id])
            enr = self._try_enroll(
                conn,
                work,
                version,
                work.customers[customer_id],
                live,
                past,
                key=key,
                context=dict(context or {}),
                cause=cause or f"manual:{now.isoformat()}",
                occurred_at=at,
            )
            self._flush(conn, work)
            return enr.id if enr else None

    def cancel(self, enrollment: str, reason: str = "cancelled") -> bool:
        """End a live enrollment by hand (admin exit, erasure). False if it was not live."""
        with self.db.begin() as conn:
            row = conn.execute(
                lock_rows(conn, select(t.enrollments).where(t.enrollments.c.id == enrollment))
            ).first()
            if row is None or row.status != "live":
                return False
            work = self._work(conn, self.clock.now())
            enr = Enrollment.from_row(row)
            version = self.registry.get(conn, enr.version)
            self._fire(work, version, enr, CANCEL)
            self._end(conn, work, version, enr, reason)
            self._flush(conn, work)
            return True

    def enroll_scheduled(self, journey: str, fired_at: datetime, page: int = 1000) -> int:
        """A scheduled entry: every customer matching the entry condition, in pages.

        Idempotent per fire: ``fired_at`` is taken to the minute (a cron's resolution), so
        every replica firing the same entry derives the same enrollment ids, and a
        customer already enrolled by this fire is skipped (a retry after an outage, a
        second replica). On PostgreSQL replicas run one fire of a journey at a time. A
        journey paused during a fire stops it between pages."""
        version = self.registry.current.get(journey)
        if version is None or journey in self.registry.paused:
            return 0
        fired = fired_at.replace(second=0, microsecond=0)
        cause = f"schedule:{fired.isoformat()}"
        cond = version.conditions.get(("entry", "condition"))
        entered = 0
        after = ""
        with self._replica_lock(f"schedule:{journey}", wait=True):
            while journey not in self.registry.paused:  # paused meanwhile: stop between pages
                with self.db.begin() as conn:
                    rows = conn.execute(
                        select(t.customers)
                        .where(t.customers.c.id > after)
                        .where(t.customers.c.erased_at.is_(None))
                        .order_by(t.customers.c.id)
                        .limit(page)
                    ).all()
                    if not rows:
                        return entered
                    work = self._work(conn, self.clock.now())
                    customers = [Customer.from_row(r) for r in rows]
                    for c in customers:
                        work.customers[c.id] = c
                    ids = [c.id for c in customers]
                    planned = {
                        c.id: enrollment_id(version.name, c.id, "", cause, fired) for c in customers
                    }
                    done = set(
                        conn.execute(
                            select(t.enrollments.c.id).where(
                                t.enrollments.c.id.in_(list(planned.values()))
                            )
                        ).scalars()
                    )
                    live = self._load_live(conn, {i: [] for i in ids})
                    past = self._past_for(conn, ids)
                    for c in customers:
                        if planned[c.id] in done:
                            continue
                        scope = self._scope(conn, c, {}, None)
                        if (cond is None or cond(scope)) and self._try_enroll(
                            conn,
                            work,
                            version,
                            c,
                            live[c.id],
                            past,
                            key="",
                            context={},
                            cause=cause,
                            occurred_at=fired,
                        ):
                            entered += 1
                    self._flush(conn, work)
                    after = ids[-1]
        return entered

    @contextlib.contextmanager
    def _replica_lock(self, key: str, *, wait: bool) -> Iterator[bool]:
        """On PostgreSQL, a session advisory lock over work that spans transactions, so one
        replica does it at a time; yields whether it is held (always True on SQLite, which
        has one writer anyway). Released when the block ends, or with the connection.

        Keys are in the ``parcours-job:`` namespace, apart from the per-customer
        ``parcours:<id>`` locks. Waiting is bounded (``lock_timeout``): a holder whose
        host vanished keeps its session until TCP notices, and a fire must not wait hours;
        the timeout surfaces as an outage, and the fire is retried."""
        with self.db.connect() as guard:
            if guard.dialect.name != "postgresql":
                yield True
                return
            fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
            guard.exec_driver_sql("SET lock_timeout = '10min'")
            try:
                got = guard.execute(
                    text(f"SELECT {fn}(hashtextextended(:k, 0))"), {"k": f"parcours-job:{key}"}
                ).scalar()
            finally:
                guard.rollback()
                guard.exec_driver_sql("RESET lock_timeout")
                guard.commit()
            held = got is not False
            try:
                yield held
            finally:
                if held:
                    try:
                        guard.execute(
                            text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
                            {"k": f"parcours-job:{key}"},
                        )
                        guard.commit()
                    except Exception:  # never hand a pooled connection back holding it
                        guard.invalidate()

    def sweep_segments(
        self, fired_at: datetime, page: int | None = None, stop: Callable[[], bool] | None = None
    ) -> int:
        """Re-evaluate the segments that read event history for every customer and announce
        membership changes (``segment.entered``/``segment.exited`` into the inbox): those
        segments can change with the mere passing of time, when no event would make the
        inbox notice. Returns the number of changes. On PostgreSQL one replica sweeps at a
        time, and a customer whose events are being applied is left to the next sweep."""
        watch = self.segment_watch
        if not watch.active or not watch.timed:
            return 0
        cause = f"sweep:{fired_at.isoformat()}"
        changes = 0
        if page is None:
            # SQLite: each page holds the one write lock while it evaluates (about half a
            # millisecond a customer), so pages stay small enough for the inbox, timers and
            # ingest to get their turn in between.
            page = 100 if self.db.dialect.name == "sqlite" else 500
        with self._replica_lock("segment-sweep", wait=False) as held:
            if not held:  # another replica is sweeping
                return 0
            with self.db.connect() as conn:
                silent = watch.unrecorded(conn)  # first sweep of these: a baseline
            after = ""
            finished = False
            while not (stop and stop()):  # a shutdown ends the sweep between pages
                with self.db.begin() as conn:
                    rows = conn.execute(
                        select(t.customers)
                        .where(t.customers.c.id > after, t.customers.c.erased_at.is_(None))
                        .order_by(t.customers.c.id)
                        .limit(page)
                    ).all()
                    if not rows:
                        if silent:
                            watch.record_baselines(conn, silent, self.clock.now())
                        finished = True
                        break
                    after = rows[-1].id
                    # Customers an inbox batch holds are left to the next sweep.
                    owned = set(lock_customers(conn, (r.id for r in rows), wait=False))
                    now = self.clock.now()
                    people = [Customer.from_row(r) for r in rows if r.id in owned]
                    scopes, stored = watch.page_scopes(conn, people, now)
                    found = 0
                    for customer in people:
                        found += len(
                            watch.reconcile(
                                conn,
                                customer,
                                watch.timed,
                                self._scope,
                                now,
                                cause=cause,
                                at=now,
                                silent=silent,
                                stored=stored[customer.id],
                                scope=scopes.get(customer.id),  # None: a heavy history
                            )
                        )
                    if found:
                        notify(conn, INBOX)
                    changes += found
        if changes or silent:
            log.info(
                "segment sweep",
                changes=changes,
                recorded_without_announcing=sorted(silent),
                finished=finished,
            )
        return changes

    # -- loading -------------------------------------------------------------------------
    def _work(self, conn: Connection, now: datetime) -> Work:
        work = Work(now)

        def load(ids: list[str]) -> dict[str, Customer]:
            return self._select_customers(conn, ids)

        work.loader = load
        return work

    def _select_customers(
        self, conn: Connection, ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, Customer]:
        """Customers by id, in chunks; ``lock`` takes their rows on PostgreSQL."""
        found: dict[str, Customer] = {}
        for chunk in _chunks(ids, 900):
            q = select(t.customers).where(t.customers.c.id.in_(chunk))
            for row in conn.execute(lock_rows(conn, q) if lock else q):
                found[row.id] = Customer.from_row(row)
        return found

    def _flush(self, conn: Connection, work: Work) -> None:
        self._resolve_removals(conn, work)
        work.flush(conn)
        if work.deliveries:
            notify(conn, OUTBOX)

    def _load_customers(
        self, conn: Connection, work: Work, ids: Mapping[str, Sequence[InboxEvent]]
    ) -> None:
        wanted = [i for i in ids if i not in work.customers]
        # Locked on PostgreSQL: the batch will write these rows back (traits, consent), and
        # an erasure committed in between must not be overwritten with old data.
        found = self._select_customers(conn, wanted, lock=True)
        for cid in wanted:
            work.customers[cid] = found.get(cid) or Customer(cid, is_new=True)

    def _load_live(
        self, conn: Connection, ids: Mapping[str, Sequence[InboxEvent]]
    ) -> dict[str, list[Enrollment]]:
        live: dict[str, list[Enrollment]] = {cid: [] for cid in ids}
        for chunk in _chunks(list(ids), 900):
            q = (
                select(t.enrollments)
                .where(t.enrollments.c.customer_id.in_(chunk))
                .where(t.enrollments.c.status == "live")
            )
            for row in conn.execute(lock_rows(conn, q)):
                live[row.customer_id].append(Enrollment.from_row(row))
        return live

    def _load_past_entries(
        self,
        conn: Connection,
        events: Sequence[InboxEvent],
        by_customer: Mapping[str, Sequence[InboxEvent]],
    ) -> dict[tuple[str, str, str], datetime]:
        """Last entry time per (journey, customer, key), only when some event of the batch
        could enroll into a journey whose re-entry policy needs it."""
        needs = any(
            v.definition.entry.reentry != "always"
            for ev in events
            if ev.name
            for v in self._entry_index.get(ev.name, ())
        ) or any(ev.kind == "identify" for ev in events)
        if not needs:
            return {}
        return self._past_for(conn, list(by_customer))

    def _past_for(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[tuple[str, str, str], datetime]:
        past: dict[tuple[str, str, str], datetime] = {}
        e = t.enrollments.c
        for chunk in _chunks(list(ids), 900):
            q = (
                select(e.journey, e.customer_id, e.key, func.max(e.entered_at).label("last"))
                .where(e.customer_id.in_(chunk))
                .group_by(e.journey, e.customer_id, e.key)
            )
            for row in conn.execute(q):
                past[(row.journey, row.customer_id, row.key)] = row.last
        return past

    # -- applying one event --------------------------------------------------------------
    def _apply_event(
        self,
        conn: Connection,
        work: Work,
        customer: Customer,
        live: list[Enrollment],
        past: dict[tuple[str, str, str], datetime],
        ev: InboxEvent,
    ) -> None:
        if ev.kind == "identify":
            before = {
                v.name: self._condition_entry_holds(conn, v, customer)
                for v in self._condition_journeys()
            }
            traits = record_consent(conn, customer, ev.traits, ev.occurred_at)
            customer.merge_traits(traits, ev.context.get("timezone"))
            for v in self._condition_journeys():
                if not before[v.name] and self._condition_entry_holds(conn, v, customer):
                    self._try_enroll(
                        conn,
                        work,
                        v,
                        customer,
                        live,
                        past,
                        key="",
                        context=dict(traits),
                        cause=ev.message_id,
                        occurred_at=ev.occurred_at,
                    )
            self.segment_watch.observe(conn, customer, ev, self._scope, work.now)
            return
        if ev.traits:
            customer.merge_traits(ev.traits, ev.context.get("timezone"))
        name = ev.name or ""
        props = ev.properties
        # Goals, exits and reactions of live enrollments, before any new entry.
        for enr in list(live):
            version = self.registry.get(conn, enr.version)
            self._react(conn, work, version, enr, customer, ev)
            if enr.status != "live":
                live.remove(enr)
        for version in self._entry_index.get(name, ()):
            if version.name in self.registry.paused:
                continue
            entry = version.definition.entry
            where = version.conditions.get(("entry", "where"))
            if where is not None and not where(self._scope(conn, customer, props, name)):
                continue
            key = ""
            if entry.key:
                value = _lookup(entry.key, props, customer.traits)
                if value is None:
                    log.warning(
                        "entry key missing; not enrolled",
                        journey=version.name,
                        key=entry.key,
                        message_id=ev.message_id,
                    )
                    continue
                key = str(value)
            self._try_enroll(
                conn,
                work,
                version,
                customer,
                live,
                past,
                key=key,
                context=dict(props),
                cause=ev.message_id,
                occurred_at=ev.occurred_at,
            )
        self.segment_watch.observe(conn, customer, ev, self._scope, work.now)

    def _react(
        self,
        conn: Connection,
        work: Work,
        version: JourneyVersion,
        enr: Enrollment,
        customer: Customer,
        ev: InboxEvent,
    ) -> None:
        j = version.definition
        name = ev.name or ""
        if j.goal and j.goal.event == name:
            in_window = j.goal.within is None or ev.occurred_at - enr.entered_at <= j.goal.within
            cond = version.conditions.get(("goal", "where"))
            if in_window and (
                cond is None or cond(self._scope(conn, customer, ev.properties, name))
            ):
                self._fire(work, version, enr, CONVERT)
                self._end(conn, work, version, enr, "converted")
                return
        for k, m in enumerate(j.exit_on):
            if m.event == name and self._matches(
                conn, version, ("exit_on", k, "where"), m, customer, ev
            ):
                self._fire(work, version, enr, LEAVE)
                self._end(conn, work, version, enr, name)
                return
        step = version.steps.get(enr.state)
        if not isinstance(step, WaitStep):
            return
        idx = version.positions[step.id]
        for k, m in enumerate(step.for_):
            if m.event != name:
                continue
            if not self._matches(conn, version, ("steps", idx, "for", k, "where"), m, customer, ev):
                continue
            if step.match_message and ev.properties.get("delivery_key") != enr.last_delivery:
                continue
            trigger = f"react:{name}" if isinstance(step.on_reaction, dict) else "react"
            enr.wake_at = None
            enr.wake_trigger = None
            self._fire(work, version, enr, trigger)
            self._settle(conn, work, version, enr, work.ref(customer.id))
            return

    def _matches(
        self,
        conn: Connection,
        version: JourneyVersion,
        path: tuple[str | int, ...],
        m: EventMatch,
        customer: Customer,
        ev: InboxEvent,
    ) -> bool:
        if m.where is None:
            return True
        return version.conditions[path](self._scope(conn, customer, ev.properties, ev.name))

    def _condition_journeys(self) -> list[JourneyVersion]:
        return [
            v
            for v in self.registry.current.values()
            if v.definition.entry.kind == "condition" and v.name not in self.registry.paused
        ]

    def _condition_entry_holds(
        self, conn: Connection, version: JourneyVersion, customer: Customer
    ) -> bool:
        cond = version.conditions.get(("entry", "condition"))
        return bool(cond and cond(self._scope(conn, customer, {}, None)))

    # -- enrolling -----------------------------------------------------------------------
    def _try_enroll(
        self,
        conn: Connection,
        work: Work,
        version: JourneyVersion,
        customer: Customer,
        live: list[Enrollment],
        past: dict[tuple[str, str, str], datetime],
        *,
        key: str,
        context: dict[str, Any],
        cause: str,
        occurred_at: datetime,
    ) -> Enrollment | None:
        entry = version.definition.entry
        if any(e.journey == version.name and e.key == key for e in live):
            return None
        last = past.get((version.name, customer.id, key))
        if last is not None:
            if entry.reentry == "never":
                return None
            after = entry.reentry_after
            if after is not None and work.now - last < after:
                return None
        eid = enrollment_id(version.name, customer.id, key, cause, occurred_at)
        if eid in work.new:
            return None
        enr = Enrollment(
            id=eid,
            journey=version.name,
            version=version.version,
            customer_id=customer.id,
            key=key,
            state=version.start,
            status="live",
            entered_at=work.now,
            step_entered_at=work.now,
            context=context,
        )
        work.new[eid] = enr
        live.append(enr)
        past[(version.name, customer.id, key)] = work.now
        work.history.append((enr.id, enr.journey, enr.customer_id, None, version.start, "enter"))
        work.transitions += 1
        self._settle(conn, work, version, enr, work.ref(customer.id))
        return enr

    # -- moving ---------------------------------------------------------------------------
    def _fire(self, work: Work, version: JourneyVersion, enr: Enrollment, trigger: str) -> None:
        source = enr.state
        version.fire(enr, trigger)  # type: ignore[arg-type]
        work.history.append((enr.id, enr.journey, enr.customer_id, source, enr.state, trigger))
        work.transitions += 1
        work.touch(enr)

    def _settle(
        self,
        conn: Connection,
        work: Work,
        version: JourneyVersion,
        enr: Enrollment,
        customer: CustomerRef,
    ) -> None:
        """Carry out the step the enrollment just entered, following instant steps (send,
        split, experiment) until it rests on a wait or delay, or ends."""
        for _ in range(MAX_HOPS):
            state = enr.state
            work.touch(enr)
            if state in TERMINALS:
                self._end(conn, work, version, enr, TERMINAL_REASONS.get(state, state[1:]))
                return
            step = version.steps[state]
            enr.visits[state] = enr.visits.get(state, 0) + 1
            enr.step_entered_at = work.now
            enr.wake_at = None
            enr.wake_trigger = None
            if isinstance(step, SendStep):
                self._send(conn, work, version, enr, customer, step)
                self._fire(work, version, enr, "advance")
            elif isinstance(step, WaitStep):
                assert step.timeout is not None
                enr.wake_at = work.now + step.timeout
                enr.wake_trigger = "timeout"
                return
            elif isinstance(step, DelayStep):
                wake = work.now + step.duration if step.duration else work.now
                if step.until is not None:
                    tz = zone(customer.get().timezone, self._default_tz(version))
                    wake = next_open(wake, step.until.window, tz, step.until.days)
                if wake <= work.now:
                    self._fire(work, version, enr, "advance")
                    continue
                enr.wake_at = wake
                enr.wake_trigger = "advance"
                return
            elif isinstance(step, SplitStep):
                idx = version.positions[step.id]
                scope = self._scope(conn, customer.get(), enr.context, None, enr.arm)
                trigger = "otherwise"
                for k in range(len(step.branches)):
                    if version.conditions[("steps", idx, "branches", k, "when")](scope):
                        trigger = f"branch:{k}"
                        break
                self._fire(work, version, enr, trigger)
            elif isinstance(step, ExperimentStep):
                arm = pick_arm(step, version.name, customer.id)
                enr.arm = arm
                self._fire(work, version, enr, f"arm:{arm}")
            elif isinstance(step, ExitStep):
                self._end(conn, work, version, enr, step.reason)
                return
        raise EngineError(f"enrollment {enr.id} moved {MAX_HOPS} steps without resting")

    def _default_tz(self, version: JourneyVersion) -> str:
        qh = version.definition.quiet_hours
        return qh.default_timezone if qh else "UTC"

    def _send(
        self,
        conn: Connection,
        work: Work,
        version: JourneyVersion,
        enr: Enrollment,
        customer: CustomerRef,
        step: SendStep,
    ) -> None:
        visit = enr.visits.get(step.id, 1)
        key = f"{enr.id}-{step.id}-{visit}"
        facts = self.channels.get(step.channel, ChannelFacts("owned", "email"))
        template = step.template
        if step.variants:
            idx = version.positions[step.id]
            scope = self._scope(conn, customer.get(), enr.context, None, enr.arm)
            for k, variant in enumerate(step.variants):
                if version.conditions[("steps", idx, "variants", k, "when")](scope):
                    template = variant.template
                    break
        due = work.now
        qh = version.definition.quiet_hours
        if qh is not None and facts.kind == "owned":
            tz = zone(customer.get().timezone, qh.default_timezone)
            due = quiet_until(work.now, qh.window, tz)
        operation = (
            "audience_add" if facts.kind == "paid" and facts.medium == "audience" else "send"
        )
        payload: dict[str, Any] = {"event": enr.context, "arm": enr.arm, "version": enr.version}
        if step.on_cap != "skip":
            payload["on_cap"] = step.on_cap
        if qh is not None:  # the dispatcher re-checks at send time (retries, deferrals)
            payload["quiet_hours"] = {"window": qh.window, "timezone": qh.default_timezone}
        work.deliveries.append(
            {
                "idempotency_key": key,
                "operation": operation,
                "enrollment_id": enr.id,
                "journey": enr.journey,
                "step": step.id,
                "channel": step.channel,
                "customer_id": customer.id,
                "template": template,
                "payload": payload,
                "transactional": version.definition.transactional,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": work.now,
            }
        )
        enr.last_delivery = key
        if facts.kind == "paid":
            work.memberships.append(
                {
                    "enrollment_id": enr.id,
                    "channel": step.channel,
                    "customer_id": customer.id,
                    "added_at": work.now,
                    "removed_at": None,
                }
            )

    def _end(
        self,
        conn: Connection,
        work: Work,
        version: JourneyVersion,
        enr: Enrollment,
        reason: str,
    ) -> None:
        enr.status = "ended"
        enr.ended_at = work.now
        enr.exit_reason = reason[:64]
        enr.wake_at = None
        enr.wake_trigger = None
        work.touch(enr)
        paid = self._paid_steps.get(version.version)
        if paid is None:
            paid = self._paid_steps[version.version] = [
                (sid, s.channel)
                for sid, s in version.steps.items()
                if isinstance(s, SendStep)
                and self.channels.get(s.channel, ChannelFacts("owned", "")).kind == "paid"
            ]
        joined = sorted({channel for sid, channel in paid if enr.visits.get(sid)})
        work.removals += [(enr, channel) for channel in joined]

    def _resolve_removals(self, conn: Connection, work: Work) -> None:
        """Queue removal from paid audiences for every membership that ends in this batch,
        unless another live enrollment still keeps the customer in that audience (two
        carts, one audience). One query for the whole batch."""
        if not work.removals:
            return
        ending = {enr.id for enr, _ in work.removals}
        m = t.audience_memberships.c
        active: dict[tuple[str, str], set[str]] = defaultdict(set)
        ids = sorted({enr.customer_id for enr, _ in work.removals})
        for chunk in _chunks(ids, 900):
            rows = conn.execute(
                select(m.customer_id, m.channel, m.enrollment_id).where(
                    m.customer_id.in_(chunk), m.removed_at.is_(None)
                )
            )
            for r in rows:
                active[(r.customer_id, r.channel)].add(r.enrollment_id)
        for row in work.memberships:
            if row["removed_at"] is None:
                active[(row["customer_id"], row["channel"])].add(row["enrollment_id"])
        queued: set[tuple[str, str]] = set()
        for enr, channel in work.removals:
            pair = (enr.customer_id, channel)
            if active[pair] - ending or pair in queued:
                continue
            queued.add(pair)
            work.deliveries.append(
                {
                    "idempotency_key": f"{enr.id}-remove-{channel}",
                    "operation": "audience_remove",
                    "enrollment_id": enr.id,
                    "journey": enr.journey,
                    "step": None,
                    "channel": channel,
                    "customer_id": enr.customer_id,
                    "template": None,
                    "payload": {},
                    "transactional": True,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": work.now,
                    "created_at": work.now,
                }
            )
        for enr_id in ending:
            work.removed_memberships.append({"b_enrollment": enr_id, "removed_at": work.now})
        for row in work.memberships:
            if row["enrollment_id"] in ending:
                row["removed_at"] = work.now

    def _scope(
        self,
        conn: Connection,
        customer: Customer,
        properties: Mapping[str, Any],
        event: str | None,
        arm: str | None = None,
    ) -> Scope:
        history = DbHistory(conn, customer, self.clock.now(), self.segments, self._scope)
        return Scope(
            traits=customer.traits,
            properties=properties,
            customer=customer.view(),
            event=event,
            history=history,
            arm=arm,
        )


def pick_arm(step: ExperimentStep, journey: str, customer_id: str) -> str:
    """Sticky, deterministic arm choice by weight."""
    x = sticky_fraction(journey, step.id, customer_id) * sum(a.weight for a in step.arms)
    for arm in step.arms:
        x -= arm.weight
        if x < 0:
            return arm.name
    return step.arms[-1].name


def _lookup(path: str, properties: Mapping[str, Any], traits: Mapping[str, Any]) -> Any:
    root, *rest = path.split(".")
    value: Any = properties if root == "properties" else traits
    for part in rest:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = ["ChannelFacts", "Engine", "EngineError", "pick_arm"]

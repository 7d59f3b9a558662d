"""``parcours simulate``: a synthetic population through the real engine and dispatcher, on
a virtual clock, in a throwaway SQLite database, with simulated channels.

Nothing leaves the process: every configured channel is replaced by a ``SimChannel`` of the
same kind and medium, which accepts the message and lets the simulation decide, with the
designer's probabilities, whether the customer reacts and converts. Reaction times are
rounded to the hour so the clock advances in a few hundred steps, not one per customer.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from channels.base import Channel, ChannelKind, Delivery, Recipient, SendResult, SiteMessage
from journeys import JourneyVersion
from journeys.schema import SendStep, WaitStep
from orchestrator.clock import VirtualClock
from orchestrator.config import Settings
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.db.types import as_utc
from orchestrator.dispatcher import Dispatcher
from orchestrator.ingest import EventIn, record
from orchestrator.policies import Policies
from orchestrator.reports import PaidFigures, build_report, experiment_table
from orchestrator.runtime import Runtime, build_runtime
from orchestrator.stats import ArmResult

HOUR = timedelta(hours=1)
ENTRY_BATCH = 5000


class SimChannel:
    """Accepts every message and remembers it for the simulation to react to."""

    def __init__(self, name: str, kind: ChannelKind, medium: str) -> None:
        self.name = name
        self.kind: ChannelKind = kind
        self.medium = medium
        self.sent: list[Delivery] = []
        self.added: list[Recipient] = []

    async def send(self, delivery: Delivery) -> SendResult:
        self.sent.append(delivery)
        site = SiteMessage(slot="banner", html="") if self.medium == "site" else None
        return SendResult(provider_message_id=f"sim-{delivery.idempotency_key}", site_message=site)

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self.added.extend(recipients)

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass
class StepFunnel:
    step: str
    kind: str
    channel: str | None
    entered: int = 0
    reacted: int = 0
    timed_out: int = 0
    converted: int = 0


@dataclass
class Report:
    journey: str
    customers: int
    virtual_days: float
    steps: list[StepFunnel]
    exits: dict[str, int]
    reached_paid: int
    converted: int
    converted_owned: int
    arms: dict[str, dict[str, int]] = field(default_factory=dict)
    transitions: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    #: Per arm: rate, Wilson interval, z-test against the control arm (orchestrator.stats).
    experiment: list[ArmResult] = field(default_factory=list)
    conversions_by_channel: dict[str, int] = field(default_factory=dict)
    paid: PaidFigures | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "customers": self.customers,
            "virtual_days": round(self.virtual_days, 2),
            "steps": [s.__dict__ for s in self.steps],
            "exits": self.exits,
            "reached_paid": self.reached_paid,
            "converted": self.converted,
            "converted_without_paid": self.converted_owned,
            "arms": self.arms,
            "experiment": [a.as_dict() for a in self.experiment],
            "conversions_by_channel": self.conversions_by_channel,
            "paid": self.paid.as_dict() if self.paid else None,
            "transitions": self.transitions,
            "deliveries": self.deliveries,
        }


class Simulation:
    def __init__(
        self,
        settings: Settings,
        journey: str,
        *,
        probabilities: dict[str, float] | None = None,
        convert: float = 0.3,
        seed: int = 1,
        start: datetime | None = None,
        directory: str | Path | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="parcours-sim-")
            directory = self._tmp.name
        base = Path(directory)
        url = f"sqlite:///{base / 'simulation.db'}"
        sim_settings = settings.model_copy(update={"database_url": url})
        db = open_engine(url)
        upgrade(db)
        self.clock = VirtualClock(start)
        from orchestrator.catalog import build_catalog

        catalog = build_catalog(sim_settings)
        self.sim_channels = {
            name: SimChannel(name, info.kind, info.medium)
            for name, info in (catalog.channels or {}).items()
        }
        channels: dict[str, Channel] = dict(self.sim_channels)
        self.rt: Runtime = build_runtime(sim_settings, clock=self.clock, db=db, channels=channels)
        if journey not in self.rt.registry.current:
            raise KeyError(
                f"no journey named {journey!r}; journeys are: "
                f"{', '.join(sorted(self.rt.registry.current))}"
            )
        for name, p in (probabilities or {}).items():
            if name not in self.sim_channels:
                raise ValueError(
                    f"--react names unknown channel {name!r}; channels are: "
                    f"{', '.join(sorted(self.sim_channels))}"
                )
            if not 0 <= p <= 1:
                raise ValueError(f"--react {name}={p}: a probability is between 0 and 1")
        if not 0 <= convert <= 1:
            raise ValueError("--convert is a probability between 0 and 1")
        self.version: JourneyVersion = self.rt.registry.current[journey]
        self.p = dict(probabilities or {})
        self.convert = convert
        self.rng = random.Random(seed)
        self.dispatcher = Dispatcher(
            self.rt.db,
            self.clock,
            self.rt.channels,
            self.rt.templates,
            self.rt.tracking,
            self.rt.settings.dispatch,
            policies=Policies.from_settings(self.rt.settings),
        )
        self._pending: list[tuple[datetime, int, dict[str, Any]]] = []
        self._seq = 0
        self._start = self.clock.now()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rt.db.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- population ------------------------------------------------------------------------
    def _record(self, bodies: list[dict[str, Any]]) -> None:
        events = [EventIn.model_validate(b) for b in bodies]
        with self.rt.db.begin() as conn:
            record(conn, events, self.clock.now())

    def enter(self, n: int) -> None:
        entry = self.version.definition.entry
        locales = ["nl", "nl", "nl", "en"]
        for start in range(0, n, ENTRY_BATCH):
            ids = [f"sim-{i:07d}" for i in range(start, min(n, start + ENTRY_BATCH))]
            self._record(
                [
                    {
                        "type": "identify",
                        "userId": cid,
                        "messageId": f"id-{cid}",
                        "traits": {
                            "email": f"{cid}@example.test",
                            "first_name": "Sim",
                            "locale": self.rng.choice(locales),
                            "country": "NL",
                            "timezone": "Europe/Amsterdam",
                        },
                    }
                    for cid in ids
                ]
            )
            if entry.event:
                self._record(
                    [
                        {
                            "type": "track",
                            "userId": cid,
                            "event": entry.event,
                            "messageId": f"entry-{cid}",
                            "properties": {
                                "cart_id": f"cart-{cid}",
                                "total": 49.5,
                                "item_count": 2,
                            },
                        }
                        for cid in ids
                    ]
                )
            self.rt.engine.run_until_idle()
        if not entry.event:
            self.rt.engine.enroll_scheduled(self.version.name, self.clock.now())

    # -- reactions -------------------------------------------------------------------------
    def _wait_after(self, step_id: str) -> WaitStep | None:
        for e in self.version.edges:
            if e.source == step_id and e.trigger == "advance":
                target = self.version.steps.get(e.target)
                return target if isinstance(target, WaitStep) else None
        return None

    def _schedule(self, at: datetime, body: dict[str, Any]) -> None:
        # Round up to the hour: a few hundred clock steps instead of one per customer.
        at = at.replace(minute=0, second=0, microsecond=0) + HOUR
        self._seq += 1
        heapq.heappush(self._pending, (at, self._seq, body))

    def _react_to_sent(self) -> None:
        goal = self.version.definition.goal
        now = self.clock.now()
        for ch in self.sim_channels.values():
            p = self.p.get(ch.name, 0.0)
            for d in ch.sent:
                if d.journey != self.version.name or self.rng.random() >= p:
                    continue
                wait = self._wait_after(d.step)
                at = now + timedelta(hours=self.rng.uniform(0, 30))
                if wait is not None and wait.timeout is not None:
                    at = now + wait.timeout * self.rng.uniform(0.02, 0.9)
                    self._schedule(
                        at,
                        {
                            "userId": d.recipient.customer_id,
                            "event": wait.for_[0].event,
                            "messageId": f"react-{d.idempotency_key}",
                            "properties": {"delivery_key": d.idempotency_key},
                        },
                    )
                if goal is not None and self.rng.random() < self.convert:
                    self._schedule(
                        at + timedelta(minutes=30),
                        {
                            "userId": d.recipient.customer_id,
                            "event": goal.event,
                            "messageId": f"goal-{d.idempotency_key}",
                            "properties": {},
                        },
                    )
            for r in ch.added:
                if goal is not None and self.rng.random() < p * self.convert:
                    self._schedule(
                        now + timedelta(hours=self.rng.uniform(1, 24 * 6)),
                        {
                            "userId": r.customer_id,
                            "event": goal.event,
                            "messageId": f"goal-ad-{r.customer_id}-{self._seq}",
                            "properties": {},
                        },
                    )
            ch.sent.clear()
            ch.added.clear()

    def _next_wake(self) -> datetime | None:
        e = t.enrollments.c
        with self.rt.db.connect() as conn:
            nxt = conn.execute(
                select(func.min(e.wake_at)).where(e.status == "live", e.wake_at.is_not(None))
            ).scalar_one()
        return as_utc(nxt)

    def _live(self) -> int:
        e = t.enrollments.c
        with self.rt.db.connect() as conn:
            return int(conn.execute(select(func.count()).where(e.status == "live")).scalar_one())

    def step(self) -> bool:
        """Apply what is due now, dispatch, react; move the clock. False when all is done."""
        self.rt.engine.run_until_idle()
        asyncio.run(self.dispatcher.run_until_idle())
        self._react_to_sent()
        wake = self._next_wake()
        nxt = self._pending[0][0] if self._pending else None
        candidates = [x for x in (wake, nxt) if x is not None]
        if not candidates:
            return False
        when = max(min(candidates), self.clock.now())
        self.clock.set(when)
        due: list[dict[str, Any]] = []
        while self._pending and self._pending[0][0] <= when:
            due.append(heapq.heappop(self._pending)[2])
        for i in range(0, len(due), ENTRY_BATCH):
            self._record(due[i : i + ENTRY_BATCH])
        return True

    def run(self, customers: int, *, progress: bool = True, max_steps: int = 100_000) -> Report:
        if customers < 1:
            raise ValueError("--customers must be at least 1")
        with Progress(
            TextColumn("[bold]simulating[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} ended"),
            TimeElapsedColumn(),
            disable=not progress,
            transient=True,
        ) as bar:
            task = bar.add_task(self.version.name, total=customers)
            self.enter(customers)
            for _ in range(max_steps):
                more = self.step()
                bar.update(
                    task,
                    completed=customers - min(self._live(), customers),
                    description=f"{self.version.name} day {(self.clock.now() - self._start).days}",
                )
                if not more:
                    break
        return self.report(customers)

    # -- the funnel --------------------------------------------------------------------------
    def report(self, customers: int) -> Report:
        h = t.history.c
        e = t.enrollments.c
        v = self.version
        chans = self.rt.catalog.channels or {}
        steps: list[StepFunnel] = []
        with self.rt.db.connect() as conn:
            entered: dict[str, int] = dict(
                conn.execute(
                    select(h.to_state, func.count(func.distinct(h.enrollment_id)))
                    .where(h.journey == v.name)
                    .group_by(h.to_state)
                ).all()
            )
            moves = conn.execute(
                select(h.from_state, h.trigger, func.count())
                .where(h.journey == v.name)
                .group_by(h.from_state, h.trigger)
            ).all()
            exits: dict[str, int] = dict(
                conn.execute(
                    select(e.exit_reason, func.count())
                    .where(e.journey == v.name, e.status == "ended")
                    .group_by(e.exit_reason)
                ).all()
            )
            paid_steps = [
                s.id for s in v.sends() if chans.get(s.channel) and chans[s.channel].kind == "paid"
            ]
            reached_paid = (
                int(
                    conn.execute(
                        select(func.count(func.distinct(h.enrollment_id))).where(
                            h.journey == v.name, h.to_state.in_(paid_steps)
                        )
                    ).scalar_one()
                )
                if paid_steps
                else 0
            )
            paid_enrollments = select(h.enrollment_id).where(
                h.journey == v.name, h.to_state.in_(paid_steps or ["-"])
            )
            converted_owned = int(
                conn.execute(
                    select(func.count()).where(
                        e.journey == v.name,
                        e.exit_reason == "converted",
                        e.id.not_in(paid_enrollments),
                    )
                ).scalar_one()
            )
            arms_rows = conn.execute(
                select(e.arm, e.exit_reason, func.count())
                .where(e.journey == v.name, e.arm.is_not(None))
                .group_by(e.arm, e.exit_reason)
            ).all()
            transitions = int(
                conn.execute(select(func.count()).where(h.journey == v.name)).scalar_one()
            )
            shared = build_report(
                conn,
                v,
                {name: info.kind for name, info in chans.items()},
                cost_per_member=self.rt.settings.reports.cost_per_audience_member,
                currency=self.rt.settings.reports.currency,
            )
            outbox: dict[str, int] = dict(
                conn.execute(
                    select(t.deliveries.c.status, func.count()).group_by(t.deliveries.c.status)
                ).all()
            )
        by_move: dict[str, Counter[str]] = defaultdict(Counter)
        for source, trigger, count in moves:
            kind = "reacted" if trigger.startswith("react") else trigger
            by_move[source or ""][kind] += count
        for sid, step in v.steps.items():
            f = StepFunnel(
                sid,
                step.type,
                step.channel if isinstance(step, SendStep) else None,
                entered=int(entered.get(sid, 0)),
            )
            f.reacted = by_move[sid]["reacted"]
            f.timed_out = by_move[sid]["timeout"]
            f.converted = by_move[sid]["convert"]
            steps.append(f)
        arms: dict[str, dict[str, int]] = defaultdict(lambda: {"entered": 0, "converted": 0})
        for arm, reason, count in arms_rows:
            arms[arm]["entered"] += count
            if reason == "converted":
                arms[arm]["converted"] += count
        return Report(
            journey=v.name,
            customers=customers,
            virtual_days=(self.clock.now() - self._start).total_seconds() / 86400,
            steps=steps,
            exits={str(k): int(c) for k, c in exits.items()},
            reached_paid=reached_paid,
            converted=int(exits.get("converted", 0)),
            converted_owned=converted_owned,
            arms=dict(arms),
            transitions=transitions,
            deliveries={str(k): int(c) for k, c in outbox.items()},
            experiment=shared.experiment,
            conversions_by_channel=shared.conversions_by_channel,
            paid=shared.paid,
        )


def print_report(report: Report, console: Console) -> None:
    table = Table(
        title=f"funnel of {report.journey}: {report.customers} customers, "
        f"{report.virtual_days:.1f} virtual days"
    )
    for col in ("step", "type", "channel", "entered", "reacted", "timed out", "converted here"):
        table.add_column(col, justify="right" if col not in ("step", "type", "channel") else "left")
    for s in report.steps:
        table.add_row(
            s.step,
            s.kind,
            s.channel or "",
            str(s.entered),
            str(s.reacted or ""),
            str(s.timed_out or ""),
            str(s.converted or ""),
        )
    console.print(table)
    pct = 100 * report.reached_paid / report.customers if report.customers else 0
    console.print(f"reached a paid step: {report.reached_paid} ({pct:.1f}%)")
    console.print(
        f"converted: {report.converted}, of whom {report.converted_owned} "
        "without ever entering a paid audience"
    )
    console.print("exits: " + ", ".join(f"{k} {v}" for k, v in sorted(report.exits.items())))
    if report.paid is not None and report.paid.saved is not None:
        p = report.paid
        console.print(
            f"estimated paid-audience spend saved: {p.currency} {p.saved:,.2f} "
            f"({p.converted_without_paid} converters x {p.currency} {p.cost_per_member:g})"
        )
    if report.experiment:
        console.print(experiment_table(report.experiment))

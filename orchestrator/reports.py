"""The report of one journey: what it did and what it was worth.

Marketers climb from mass mailing to segments to personal journeys by measuring each step;
this is the measurement. Everything is read from what the runtime already records — the
``history`` of transitions, the ``deliveries`` outbox, ``audience_memberships`` and the
enrollments' exit reasons and experiment arms — so a report costs no bookkeeping on the
hot path and can be recomputed at any time, for the live daemon's database or a
simulation's.

* **Funnel per step**: customers who entered the step, reacted there, timed out there, and
  converted while there.
* **Conversions by channel**: each conversion is attributed to the channel of the last
  reaction before it (the channel of the message the reacting wait was about). Customers
  who never reacted but converted while in a paid audience count for that audience; the
  rest are "no reaction".
* **Experiments**: per arm, entered, reacted, converted, the conversion rate with its Wilson
  interval, and each arm against the control group (two-proportion z-test).
* **Paid audiences**: customers added, removed on conversion, and the converters who never
  reached the paid step — with ``[reports] cost_per_audience_member``, the budget the owned
  channels saved.

``report_as_dict`` is the entry point for the admin API; ``parcours report`` prints the
same as a table, as JSON, or draws the funnel as SVG.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, and_, case, func, select

from journeys import JourneyVersion
from journeys.schema import ExperimentStep, SendStep
from orchestrator.db import tables as t
from orchestrator.db.types import as_utc
from orchestrator.stats import ArmCounts, ArmResult, compare_arms

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime

NO_REACTION = "no reaction"


@dataclass
class StepFunnel:
    step: str
    kind: str
    channel: str | None
    paid: bool = False
    entered: int = 0
    reacted: int = 0
    timed_out: int = 0
    converted: int = 0


@dataclass
class PaidFigures:
    """What the owned-first rule did for the paid budget."""

    paid_steps: list[str]
    added: int = 0
    removed_on_conversion: int = 0
    converted_without_paid: int = 0
    cost_per_member: float | None = None
    currency: str = "EUR"

    @property
    def saved(self) -> float | None:
        """Converters who never reached the paid step, times what a member costs: the
        spend the owned channels made unnecessary. None without a paid step or a cost."""
        if not self.paid_steps or self.cost_per_member is None:
            return None
        return round(self.converted_without_paid * self.cost_per_member, 2)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"saved": self.saved}


@dataclass
class JourneyReport:
    journey: str
    enrolled: int
    live: int
    converted: int
    exits: dict[str, int]
    steps: list[StepFunnel]
    conversions_by_channel: dict[str, int]
    experiment: list[ArmResult]
    paid: PaidFigures
    generated_at: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "enrolled": self.enrolled,
            "live": self.live,
            "converted": self.converted,
            "conversion_rate": self.converted / self.enrolled if self.enrolled else 0.0,
            "exits": self.exits,
            "steps": [asdict(s) for s in self.steps],
            "conversions_by_channel": self.conversions_by_channel,
            "experiment": [a.as_dict() for a in self.experiment],
            "paid": self.paid.as_dict(),
            "notes": self.notes,
        }


def build_report(
    conn: Connection,
    version: JourneyVersion,
    channel_kinds: Mapping[str, str],
    *,
    cost_per_member: float | None = None,
    currency: str = "EUR",
    now: datetime | None = None,
) -> JourneyReport:
    """The report of ``version``'s journey over every version customers entered with.
    ``channel_kinds`` maps channel instances to ``owned`` or ``paid``."""
    name = version.name
    h, e = t.history.c, t.enrollments.c
    entered: dict[str, int] = dict(
        conn.execute(
            select(h.to_state, func.count(func.distinct(h.enrollment_id)))
            .where(h.journey == name)
            .group_by(h.to_state)
        ).all()
    )
    moves: dict[str, Counter[str]] = defaultdict(Counter)
    for source, trigger, count in conn.execute(
        select(h.from_state, h.trigger, func.count())
        .where(h.journey == name)
        .group_by(h.from_state, h.trigger)
    ):
        moves[source or ""][_move(trigger)] += int(count)
    statuses: dict[str, int] = dict(
        conn.execute(
            select(e.status, func.count()).where(e.journey == name).group_by(e.status)
        ).all()
    )
    exits = {
        str(reason): int(count)
        for reason, count in conn.execute(
            select(e.exit_reason, func.count())
            .where(e.journey == name, e.status == "ended")
            .group_by(e.exit_reason)
        )
    }
    steps: list[StepFunnel] = []
    for sid, step in version.steps.items():
        channel = step.channel if isinstance(step, SendStep) else None
        steps.append(
            StepFunnel(
                step=sid,
                kind=step.type,
                channel=channel,
                paid=channel_kinds.get(channel or "") == "paid",
                entered=int(entered.get(sid, 0)),
                reacted=moves[sid]["reacted"],
                timed_out=moves[sid]["timeout"],
                converted=moves[sid]["convert"],
            )
        )
    known = set(version.steps)
    for sid in sorted(set(entered) - known - {"", None}):
        if sid.startswith("@"):
            continue  # terminal pseudo-states of the machine
        steps.append(StepFunnel(sid, "(older version)", None, entered=int(entered[sid])))
    paid_steps = [s.step for s in steps if s.paid]
    return JourneyReport(
        journey=name,
        enrolled=sum(int(v) for v in statuses.values()),
        live=int(statuses.get("live", 0)),
        converted=exits.get("converted", 0),
        exits=exits,
        steps=steps,
        conversions_by_channel=_attribution(conn, name, channel_kinds),
        experiment=_experiment(conn, version),
        paid=_paid(conn, name, paid_steps, cost_per_member, currency),
        generated_at=now,
        notes=_notes(version),
    )


def _move(trigger: str) -> str:
    return "reacted" if trigger.startswith("react") else trigger


def _attribution(conn: Connection, journey: str, kinds: Mapping[str, str]) -> dict[str, int]:
    """Conversions by the channel of the last reaction before them."""
    e, h, d, m = t.enrollments.c, t.history.c, t.deliveries.c, t.audience_memberships.c
    converted = (
        select(e.id).where(e.journey == journey, e.exit_reason == "converted").scalar_subquery()
    )
    ended: dict[str, datetime] = {
        r.id: as_utc(r.ended_at) or datetime.min
        for r in conn.execute(
            select(e.id, e.ended_at).where(e.journey == journey, e.exit_reason == "converted")
        )
    }
    if not ended:
        return {}
    reacts: dict[str, list[datetime]] = defaultdict(list)
    for r in conn.execute(
        select(h.enrollment_id, h.at).where(
            h.journey == journey, h.trigger.like("react%"), h.enrollment_id.in_(converted)
        )
    ):
        reacts[r.enrollment_id].append(as_utc(r.at) or datetime.min)
    sends: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for s in conn.execute(
        select(d.enrollment_id, d.created_at, d.channel).where(
            d.journey == journey, d.operation == "send", d.enrollment_id.in_(converted)
        )
    ):
        sends[s.enrollment_id].append((as_utc(s.created_at) or datetime.min, s.channel))
    audience: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for a in conn.execute(
        select(m.enrollment_id, m.added_at, m.channel).where(m.enrollment_id.in_(converted))
    ):
        audience[a.enrollment_id].append((as_utc(a.added_at) or datetime.min, a.channel))
    out: Counter[str] = Counter()
    for eid, at in ended.items():
        before = [x for x in reacts.get(eid, []) if x <= at]
        channel = None
        if before:
            last = max(before)
            prior = [s for s in sends.get(eid, []) if s[0] <= last]
            channel = max(prior)[1] if prior else None
        if channel is None:
            ads = [a for a in audience.get(eid, []) if a[0] <= at]
            channel = max(ads)[1] if ads else NO_REACTION
        out[channel] += 1
    return dict(out.most_common())


def _experiment(conn: Connection, version: JourneyVersion) -> list[ArmResult]:
    e, h = t.enrollments.c, t.history.c
    rows = conn.execute(
        select(
            e.arm,
            func.count(),
            func.sum(case((e.exit_reason == "converted", 1), else_=0)),
        )
        .where(e.journey == version.name, e.arm.is_not(None))
        .group_by(e.arm)
    ).all()
    if not rows:
        return []
    reacted: dict[str, int] = dict(
        conn.execute(
            select(e.arm, func.count(func.distinct(h.enrollment_id)))
            .select_from(t.history.join(t.enrollments, and_(e.id == h.enrollment_id)))
            .where(e.journey == version.name, e.arm.is_not(None), h.trigger.like("react%"))
            .group_by(e.arm)
        ).all()
    )
    control = {
        a.name
        for s in version.definition.steps
        if isinstance(s, ExperimentStep)
        for a in s.arms
        if a.control
    }
    order = [
        a.name for s in version.definition.steps if isinstance(s, ExperimentStep) for a in s.arms
    ]
    counts = [
        ArmCounts(
            name=str(arm),
            entered=int(n),
            reacted=int(reacted.get(arm, 0)),
            converted=int(conv or 0),
            control=arm in control,
        )
        for arm, n, conv in rows
    ]
    counts.sort(key=lambda a: order.index(a.name) if a.name in order else len(order))
    return compare_arms(counts)


def _paid(
    conn: Connection,
    journey: str,
    paid_steps: list[str],
    cost: float | None,
    currency: str,
) -> PaidFigures:
    e, m = t.enrollments.c, t.audience_memberships.c
    joined = t.audience_memberships.join(t.enrollments, e.id == m.enrollment_id)
    added = conn.execute(
        select(func.count(func.distinct(m.customer_id)))
        .select_from(joined)
        .where(e.journey == journey)
    ).scalar_one()
    removed = conn.execute(
        select(func.count(func.distinct(m.customer_id)))
        .select_from(joined)
        .where(e.journey == journey, e.exit_reason == "converted", m.removed_at.is_not(None))
    ).scalar_one()
    in_audience = select(m.enrollment_id).scalar_subquery()
    owned = conn.execute(
        select(func.count(func.distinct(e.customer_id))).where(
            e.journey == journey, e.exit_reason == "converted", e.id.not_in(in_audience)
        )
    ).scalar_one()
    return PaidFigures(
        paid_steps=paid_steps,
        added=int(added),
        removed_on_conversion=int(removed),
        converted_without_paid=int(owned),
        cost_per_member=cost,
        currency=currency,
    )


def _notes(version: JourneyVersion) -> list[str]:
    notes = []
    arms = [s for s in version.definition.steps if isinstance(s, ExperimentStep)]
    if arms and not any(a.control for s in arms for a in s.arms):
        notes.append("the experiment has no control arm: no significance against control")
    if len(arms) > 1:
        notes.append("several experiment steps: arms are grouped by name across them")
    return notes


def report_for(runtime: Runtime, journey: str) -> JourneyReport:
    """Build the report from a runtime (CLI, admin API). Raises KeyError for an unknown
    journey, with the known ones in the message."""
    version = runtime.registry.current.get(journey)
    if version is None:
        raise KeyError(
            f"no journey named {journey!r}; journeys are: "
            f"{', '.join(sorted(runtime.registry.current))}"
        )
    kinds = {name: info.kind for name, info in (runtime.catalog.channels or {}).items()}
    settings = runtime.settings.reports
    with runtime.db.connect() as conn:
        return build_report(
            conn,
            version,
            kinds,
            cost_per_member=settings.cost_per_audience_member,
            currency=settings.currency,
            now=runtime.clock.now(),
        )


def report_as_dict(runtime: Runtime, journey: str) -> dict[str, Any]:
    """The journey report as plain JSON-ready data, for the admin API
    (``GET /admin/journeys/{journey}/report``). KeyError for an unknown journey."""
    return report_for(runtime, journey).as_dict()


# -- presentation -------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_report(report: JourneyReport, console: Console) -> None:
    """The report as readable terminal tables."""
    rate = report.converted / report.enrolled if report.enrolled else 0.0
    console.print(
        f"[bold]{report.journey}[/bold]: {report.enrolled} enrolled, {report.live} live, "
        f"{report.converted} converted ({_pct(rate)})"
    )
    funnel = Table(title="funnel per step")
    for col in ("step", "type", "channel", "entered", "reacted", "timed out", "converted here"):
        funnel.add_column(col, justify="left" if col in ("step", "type", "channel") else "right")
    for s in report.steps:
        funnel.add_row(
            s.step,
            s.kind,
            (s.channel or "") + (" (paid)" if s.paid else ""),
            str(s.entered),
            str(s.reacted or ""),
            str(s.timed_out or ""),
            str(s.converted or ""),
        )
    console.print(funnel)
    if report.conversions_by_channel:
        by = Table(title="conversions by the channel of the last reaction")
        by.add_column("channel")
        by.add_column("conversions", justify="right")
        by.add_column("share", justify="right")
        total = sum(report.conversions_by_channel.values())
        for channel, n in report.conversions_by_channel.items():
            by.add_row(channel, str(n), _pct(n / total))
        console.print(by)
    if report.experiment:
        console.print(experiment_table(report.experiment))
    p = report.paid
    if p.paid_steps:
        console.print(
            f"paid audience ({', '.join(p.paid_steps)}): {p.added} customers added, "
            f"{p.removed_on_conversion} removed on conversion; "
            f"{p.converted_without_paid} converted on owned channels without ever entering it"
        )
        if p.saved is not None:
            console.print(
                f"estimated spend saved: {p.currency} {p.saved:,.2f} "
                f"({p.converted_without_paid} x {p.currency} {p.cost_per_member:g} per member)"
            )
    if report.exits:
        console.print("exits: " + ", ".join(f"{k} {v}" for k, v in sorted(report.exits.items())))
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")


def experiment_table(arms: list[ArmResult], title: str = "experiment arms") -> Table:
    """Arms with rate, 95% Wilson interval and the test against control."""
    table = Table(title=title)
    for col in ("arm", "entered", "reacted", "converted", "rate", "95% CI", "vs control", "p"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for a in arms:
        if a.control:
            versus, p = "control", ""
        elif a.p_value is None:
            versus, p = "", ""
        else:
            mark = " *" if a.significant else ""
            versus = f"{100 * (a.lift or 0):+.1f} pt{mark}"
            p = f"{a.p_value:.3f}" if a.p_value >= 0.001 else "<0.001"
        table.add_row(
            a.name,
            str(a.entered),
            str(a.reacted),
            str(a.converted),
            _pct(a.rate),
            f"{100 * a.ci_low:.1f}-{100 * a.ci_high:.1f}%",
            versus,
            p,
        )
    table.caption = "* p < 0.05 (two-proportion z-test against the control arm)"
    return table


def funnel_svg(report: JourneyReport) -> str:
    """A horizontal bar chart of the funnel: per step, entered, reacted and converted,
    scaled to the widest step; paid steps in red. Plain SVG, no library: it opens in any
    browser and pastes into a slide."""
    steps = [s for s in report.steps if s.entered or s.reacted or s.converted]
    top = max((s.entered for s in steps), default=0) or 1
    label_w, bar_w, row_h, head = 170, 460, 46, 56
    width = label_w + bar_w + 110
    height = head + row_h * len(steps) + 40
    colours = {"entered": "#5b7fb5", "reacted": "#f0a030", "converted": "#3a9b5c"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="12" y="24" font-size="16" font-weight="bold">'
        f"{escape(report.journey)}: funnel per step</text>",
    ]
    x = 12
    for key, colour in colours.items():
        out.append(f'<rect x="{x}" y="36" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="46">{key}</text>')
        x += 90
    out.append(f'<rect x="{x}" y="36" width="12" height="12" fill="#c62828"/>')
    out.append(f'<text x="{x + 16}" y="46">entered a paid step</text>')
    for i, s in enumerate(steps):
        y = head + i * row_h
        label = s.step + (f" ({s.channel})" if s.channel else "")
        out.append(f'<text x="{label_w - 8}" y="{y + 20}" text-anchor="end">{escape(label)}</text>')
        for j, (key, value) in enumerate(
            (("entered", s.entered), ("reacted", s.reacted), ("converted", s.converted))
        ):
            w = max(bar_w * value / top, 1 if value else 0)
            colour = "#c62828" if key == "entered" and s.paid else colours[key]
            by = y + 4 + j * 12
            out.append(
                f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="10" fill="{colour}"/>'
            )
            if value:
                out.append(
                    f'<text x="{label_w + w + 4:.1f}" y="{by + 9}" font-size="10">{value}</text>'
                )
    foot = head + row_h * len(steps) + 20
    out.append(
        f'<text x="12" y="{foot}" font-size="11" fill="#555">'
        f"{report.enrolled} enrolled, {report.converted} converted"
        f"{escape(_saved_line(report.paid))}</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _saved_line(p: PaidFigures) -> str:
    if p.saved is None:
        return ""
    return (
        f"; {p.converted_without_paid} without a paid audience: {p.currency} {p.saved:,.2f} saved"
    )


__all__ = [
    "JourneyReport",
    "PaidFigures",
    "StepFunnel",
    "build_report",
    "experiment_table",
    "funnel_svg",
    "print_report",
    "report_as_dict",
    "report_for",
]

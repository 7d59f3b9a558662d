"""Policies that span journeys: consent, frequency caps and quiet hours.

A journey designer thinks about one journey; the customer lives all of them at once. These
rules protect the customer (and the sender's reputation) across every journey, so they are
applied where every message passes: the dispatcher, at the moment a delivery is due, not
when the engine wrote it. A retry that lands at night or a second journey's email the same
morning is judged against what was really sent by then.

The engine never waits on a policy. It has already moved the customer on when it wrote the
outbox row; a blocked message is marked ``skipped`` with the reason (the wait after it then
times out, which is the journey's no-reaction path), or deferred to a later
``next_attempt_at``.

* **Consent** (``customers.consent``: channel -> ``{"granted", "source", "at"}``; a key may
  also be a medium such as ``email``). An opt-out blocks the channel for every journey,
  transactional ones included; channels in ``[consent] required`` also need an opt-in.
  Removing someone from a paid audience is never blocked.
* **Frequency caps** (``[[caps]]``): at most ``limit`` marketing sends per customer on a
  channel within ``period``. Transactional journeys bypass caps. The send step's ``on_cap``
  says skip (default) or defer until the cap allows.
* **Quiet hours** (``[quiet_hours]`` by default, a journey's ``quiet_hours`` override it):
  marketing sends on owned channels wait until the quiet window ends in the customer's own
  timezone. Transactional messages are not held back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, update

from journeys.durations import parse_duration
from orchestrator.config import Settings
from orchestrator.db import tables as t
from orchestrator.timewindows import quiet_until, zone

#: The identify trait a site uses to record consent: ``consent: {email: false}`` or
#: ``consent: {email: {granted: true, source: "preference-centre"}}``.
CONSENT_TRAIT = "consent"


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` sends on ``channel`` (instance name or medium) per ``period``."""

    channel: str
    limit: int
    period: timedelta

    def applies(self, channel: str, medium: str) -> bool:
        return self.channel in (channel, medium)

    def describe(self) -> str:
        hours = self.period.total_seconds() / 3600
        span = f"{hours:g}h" if hours < 48 else f"{hours / 24:g}d"
        return f"{self.limit} per {span}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the dispatcher does with a due delivery: ``send``, ``skip`` (with the reason)
    or ``defer`` (to ``until``, with the reason)."""

    action: str
    reason: str = ""
    until: datetime | None = None


SEND = Decision("send")


@dataclass(frozen=True, slots=True)
class Policies:
    """The cross-journey rules from configuration. ``Policies()`` enforces consent only."""

    caps: tuple[Cap, ...] = ()
    quiet_window: str = ""
    default_timezone: str = "Europe/Amsterdam"
    consent_required: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policies:
        return cls(
            caps=tuple(Cap(c.channel, c.limit, parse_duration(c.period)) for c in settings.caps),
            quiet_window=settings.quiet_hours.window,
            default_timezone=settings.quiet_hours.default_timezone,
            consent_required=frozenset(settings.consent.required),
        )

    def caps_for(self, channel: str, medium: str) -> list[Cap]:
        return [c for c in self.caps if c.applies(channel, medium)]

    @property
    def longest_period(self) -> timedelta:
        return max((c.period for c in self.caps), default=timedelta(0))

    # -- consent ---------------------------------------------------------------------------
    def consent(self, record: Mapping[str, Any], channel: str, medium: str) -> Decision:
        """Skip when the customer opted out of this channel (or its medium), or when the
        channel needs an explicit opt-in that is missing. The channel's own entry wins
        over the medium's: opting out of ``newsletter`` leaves ``email`` alone."""
        granted = granted_for(record, channel, medium)
        needs_opt_in = bool({channel, medium} & self.consent_required)
        if granted is False or (granted is None and needs_opt_in):
            return Decision("skip", f"no consent for {channel}")
        return SEND

    # -- quiet hours -----------------------------------------------------------------------
    def quiet(
        self,
        now: datetime,
        timezone: str | None,
        journey_quiet: Mapping[str, Any] | None,
    ) -> Decision:
        """Defer to the end of the quiet window when ``now`` falls inside it in the
        customer's own timezone. The journey's window (carried in the delivery's payload)
        wins over the configured default."""
        window = self.quiet_window
        fallback = self.default_timezone
        if journey_quiet:
            window = str(journey_quiet.get("window") or "")
            fallback = str(journey_quiet.get("timezone") or fallback)
        if not window:
            return SEND
        until = quiet_until(now, window, zone(timezone, fallback))
        if until <= now:
            return SEND
        return Decision("defer", f"quiet hours {window}", until)

    # -- frequency caps --------------------------------------------------------------------
    def cap(
        self,
        now: datetime,
        channel: str,
        medium: str,
        sent: Sequence[tuple[str, str, datetime]],
        on_cap: str,
    ) -> Decision:
        """``sent`` are this customer's marketing sends as (channel, medium, time), across
        journeys. Skip or defer when one more send on ``channel`` would break a cap; a
        deferral goes to the moment the oldest counted send leaves the window."""
        worst: Decision | None = None
        for cap in self.caps_for(channel, medium):
            recent = sorted(
                at for ch, med, at in sent if cap.applies(ch, med) and at > now - cap.period
            )
            if len(recent) < cap.limit:
                continue
            reason = f"frequency cap {cap.channel} {cap.describe()}"
            if on_cap != "defer" or cap.limit == 0:
                return Decision("skip", reason)
            until = recent[len(recent) - cap.limit] + cap.period
            if worst is None or (worst.until is not None and until > worst.until):
                worst = Decision("defer", reason, until)
        return worst or SEND


def granted_for(record: Mapping[str, Any], channel: str, medium: str) -> bool | None:
    """True/False when the customer's consent record says so for this channel (first) or
    its medium; None when it says nothing."""
    for key in (channel, medium):
        entry = record.get(key)
        if isinstance(entry, Mapping) and "granted" in entry:
            return bool(entry["granted"])
        if isinstance(entry, bool):
            return entry
    return None


def consent_updates(
    traits: Mapping[str, Any], at: datetime, default_source: str = "identify"
) -> dict[str, dict[str, Any]]:
    """The consent entries an identify's ``consent`` trait records, each with its source
    and time. Accepts ``{email: false}`` and ``{email: {granted: true, source: "form"}}``;
    anything else is ignored rather than guessed at."""
    given = traits.get(CONSENT_TRAIT)
    if not isinstance(given, Mapping):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for channel, value in given.items():
        if isinstance(value, bool):
            out[str(channel)] = {"granted": value, "source": default_source, "at": at.isoformat()}
        elif isinstance(value, Mapping) and isinstance(value.get("granted"), bool):
            out[str(channel)] = {
                "granted": value["granted"],
                "source": str(value.get("source") or default_source),
                "at": str(value.get("at") or at.isoformat()),
            }
    return out


def record_consent(
    conn: Connection, customer: Any, traits: Mapping[str, Any], at: datetime
) -> dict[str, Any]:
    """Apply an identify's ``consent`` trait to the customer's consent record (in memory,
    and in the database for a customer who already has a row; a new customer's row is
    inserted with it). Returns the traits without ``consent``: the record in
    ``customers.consent`` is the one truth, which unsubscribes also update."""
    updates = consent_updates(traits, at)
    if CONSENT_TRAIT not in traits:
        return dict(traits)
    rest = {k: v for k, v in traits.items() if k != CONSENT_TRAIT}
    if not updates:
        return rest
    customer.consent = {**customer.consent, **updates}
    if not customer.is_new:
        conn.execute(
            update(t.customers)
            .where(t.customers.c.id == customer.id)
            .values(consent=customer.consent)
        )
    return rest


__all__ = [
    "CONSENT_TRAIT",
    "SEND",
    "Cap",
    "Decision",
    "Policies",
    "consent_updates",
    "granted_for",
    "record_consent",
]

"""The dispatcher: takes due rows from the deliveries outbox and hands them to channels.

A claim marks rows ``sending`` with a lease (their ``next_attempt_at`` moves to the lease
end), in its own short transaction; the provider calls happen outside any transaction; the
results are written in a second one. A worker that dies mid-send loses its lease and the
row is sent again with the same idempotency key: at-least-once delivery, exactly one
outbox row per intended message.

Retryable failures back off exponentially with full jitter, or as the provider's
``Retry-After`` says; permanent failures and exhausted retries end ``dead`` with the
reason, which ``parcours deliveries --dead`` lists.

Before anything is sent, the cross-journey policies (``orchestrator.policies``: consent,
quiet hours, frequency caps) are decided in the claiming transaction; a held delivery ends
``skipped`` with the reason or waits, pending, until the policy allows it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update
from sqlalchemy import Engine as SqlEngine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from channels.base import (
    AudienceChannel,
    Channel,
    Delivery,
    PermanentError,
    Recipient,
    RetryableError,
    SendResult,
)
from channels.templates import TemplateSet
from channels.tracking import TrackingConfig, apply_tracking
from orchestrator.clock import Clock
from orchestrator.config import DispatchSettings
from orchestrator.db import tables as t
from orchestrator.db.sql import CAP, claim_rows, lock_customers
from orchestrator.db.types import as_utc
from orchestrator.policies import Policies

log = structlog.get_logger("parcours.dispatcher")

MAX_ERROR = 2000


def database_unavailable(exc: BaseException) -> bool:
    """A refused, lost or locked database connection: transient, worth retrying."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    key: str
    operation: str
    channel: str
    customer_id: str
    journey: str | None
    step: str | None
    template: str | None
    payload: dict[str, Any]
    attempts: int


@dataclass(slots=True)
class Outcome:
    claimed: Claimed
    status: str  # sent | pending | dead | skipped
    provider_message_id: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    site: dict[str, Any] | None = None


def backoff(attempt: int, settings: DispatchSettings, rng: random.Random) -> float:
    """Seconds before the next attempt: full jitter over an exponential ceiling."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** max(attempt - 1, 0))
    return rng.uniform(ceiling / 2, ceiling)


class Dispatcher:
    def __init__(
        self,
        db: SqlEngine,
        clock: Clock,
        channels: Mapping[str, Channel],
        templates: TemplateSet,
        tracking: TrackingConfig,
        settings: DispatchSettings,
        *,
        lease_seconds: float = 60.0,
        rng: random.Random | None = None,
        policies: Policies | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.channels = channels
        self.templates = templates
        self.tracking = tracking
        self.settings = settings
        self.lease = timedelta(seconds=lease_seconds)
        self.rng = rng or random.Random()
        self._limits: dict[str, asyncio.Semaphore] = {}
        #: Consent always; caps and default quiet hours when built from settings.
        self.policies = policies or Policies()

    # -- claiming and recording (synchronous, short transactions) -------------------------
    def claim(self, limit: int) -> tuple[list[Claimed], dict[str, Recipient]]:
        with self.db.begin() as conn:
            now = self.clock.now()
            d = t.deliveries.c
            rows = claim_rows(
                conn,
                select(t.deliveries)
                .where(d.status.in_(("pending", "sending")), d.next_attempt_at <= now)
                .order_by(d.next_attempt_at)
                .limit(limit),
            )
            if not rows:
                return [], {}
            rows = self._apply_policies(conn, now, rows)
            if not rows:
                return [], {}
            conn.execute(
                update(t.deliveries)
                .where(d.id == bindparam("b_id"))
                .values(
                    status="sending",
                    attempts=bindparam("b_attempts"),
                    next_attempt_at=now + self.lease,
                    lease_until=now + self.lease,
                ),
                [{"b_id": r.id, "b_attempts": r.attempts + 1} for r in rows],
            )
            claimed = [
                Claimed(
                    r.id,
                    r.idempotency_key,
                    r.operation,
                    r.channel,
                    r.customer_id,
                    r.journey,
                    r.step,
                    r.template,
                    dict(r.payload or {}),
                    r.attempts + 1,
                )
                for r in rows
            ]
            ids = sorted({c.customer_id for c in claimed})
            recipients: dict[str, Recipient] = {}
            erased: set[str] = set()
            for i in range(0, len(ids), 900):
                for c in conn.execute(
                    select(t.customers).where(t.customers.c.id.in_(ids[i : i + 900]))
                ):
                    if c.erased_at is not None:
                        erased.add(c.id)
                        continue
                    traits = dict(c.traits or {})
                    consent = {
                        k: bool(v.get("granted")) if isinstance(v, dict) else bool(v)
                        for k, v in (c.consent or {}).items()
                    }
                    recipients[c.id] = Recipient(
                        customer_id=c.id,
                        email=c.email,
                        phone=c.phone,
                        external_id=str(traits.get("external_id") or c.id),
                        timezone=c.timezone,
                        traits=traits,
                        consent=consent,
                    )
            return claimed, recipients

    def _apply_policies(self, conn: Connection, now: datetime, rows: Sequence[Any]) -> list[Any]:
        """Consent, quiet hours and frequency caps (``orchestrator.policies``), decided in
        the claiming transaction so a cap counts exactly what was sent before it. Blocked
        rows are settled here (``skipped`` with the reason, or ``pending`` at a later time
        without using up an attempt); the rest are returned to be sent."""
        policies = self.policies
        consent: dict[str, dict[str, Any]] = {}
        ids = sorted({r.customer_id for r in rows})
        c = t.customers.c
        for i in range(0, len(ids), 900):
            for row in conn.execute(
                select(c.id, c.consent, c.timezone).where(c.id.in_(ids[i : i + 900]))
            ):
                consent[row.id] = {"record": dict(row.consent or {}), "timezone": row.timezone}
        if policies.caps:
            self._lock_capped(conn, rows)
        sent = self._recent_sends(conn, now, rows) if policies.caps else {}
        keep: list[Any] = []
        settled: list[dict[str, Any]] = []
        for r in rows:
            channel = self.channels.get(r.channel)
            info = consent.get(r.customer_id)
            if channel is None or info is None or r.operation == "audience_remove":
                keep.append(r)  # unknown channel/customer: the send path says why
                continue
            decision = policies.consent(info["record"], r.channel, channel.medium)
            marketing = r.operation == "send" and not r.transactional
            payload = r.payload or {}
            if decision.action == "send" and marketing and channel.kind == "owned":
                decision = policies.quiet(now, info["timezone"], payload.get("quiet_hours"))
            if decision.action == "send" and marketing:
                mine = sent.setdefault(r.customer_id, [])
                decision = policies.cap(
                    now, r.channel, channel.medium, mine, str(payload.get("on_cap") or "skip")
                )
                if decision.action == "send":
                    mine.append((r.channel, channel.medium, now))
            if decision.action == "send":
                keep.append(r)
                continue
            log.info(
                "delivery held by policy",
                key=r.idempotency_key,
                action=decision.action,
                reason=decision.reason,
            )
            if decision.action == "skip":
                settled.append(
                    {
                        "b_id": r.id,
                        "status": "skipped",
                        "at": r.next_attempt_at,
                        "err": decision.reason,
                    }
                )
            else:
                settled.append(
                    {
                        "b_id": r.id,
                        "status": "pending",
                        "at": decision.until,
                        "err": f"deferred: {decision.reason}",
                    }
                )
        if settled:
            d = t.deliveries.c
            conn.execute(
                update(t.deliveries)
                .where(d.id == bindparam("b_id"))
                .values(
                    status=bindparam("status"),
                    next_attempt_at=bindparam("at"),
                    last_error=bindparam("err"),
                    lease_until=None,
                ),
                settled,
            )
        return keep

    def _lock_capped(self, conn: Connection, rows: Sequence[Any]) -> None:
        """Replicas on PostgreSQL: two workers may claim two messages of one customer at the
        same moment, and each would count the other's as not yet sent. A transaction-scoped
        advisory lock per customer with marketing sends in the batch makes the second
        worker wait until the first has committed its ``sending`` rows, which it then
        counts. Taken in sorted order (the array's order), so workers never deadlock.
        SQLite has one writer at a time already."""
        marketing = (r.customer_id for r in rows if r.operation == "send" and not r.transactional)
        lock_customers(conn, marketing, wait=True, namespace=CAP)

    def _recent_sends(
        self, conn: Connection, now: datetime, rows: Sequence[Any]
    ) -> dict[str, list[tuple[str, str, datetime]]]:
        """Marketing sends of the batch's customers within the longest cap period, across
        all journeys: sent ones at their time, ones another worker is sending right now as
        sent now."""
        ids = sorted({r.customer_id for r in rows if r.operation == "send" and not r.transactional})
        claimed = {r.id for r in rows}
        since = now - self.policies.longest_period
        d = t.deliveries.c
        out: dict[str, list[tuple[str, str, datetime]]] = {}
        for i in range(0, len(ids), 900):
            q = select(d.id, d.customer_id, d.channel, d.status, d.sent_at).where(
                d.customer_id.in_(ids[i : i + 900]),
                d.operation == "send",
                d.transactional.is_(False),
                or_(
                    and_(d.status == "sent", d.sent_at > since),
                    d.status == "sending",
                ),
            )
            for row in conn.execute(q):
                if row.id in claimed:
                    continue
                ch = self.channels.get(row.channel)
                at = as_utc(row.sent_at) if row.status == "sent" else now
                out.setdefault(row.customer_id, []).append(
                    (row.channel, ch.medium if ch else "", at or now)
                )
        return out

    def record_within_lease(self, outcomes: Sequence[Outcome], claimed_at: float) -> None:
        """``record``, retried while the database is unreachable (a restart, a failover)
        and the lease taken at ``claimed_at`` (``time.monotonic()``) still holds: these
        messages have gone out, and a result not written means sending them again once the
        lease ends. Past most of the lease the error is raised and that is what happens."""
        deadline = claimed_at + 0.8 * self.lease.total_seconds()
        delay = 0.1
        while True:
            try:
                self.record(outcomes)
                return
            except Exception as exc:
                if not database_unavailable(exc) or time.monotonic() + delay >= deadline:
                    raise
                log.warning(
                    "recording results: database unavailable; retrying",
                    deliveries=len(outcomes),
                    error=str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch's results in one transaction: one executemany UPDATE per outcome
        kind (a row per statement cost a round trip each and dominated large batches). The
        ``attempts`` guard keeps a result from overwriting a row another worker re-claimed
        after this lease expired."""
        if not outcomes:
            return
        now = self.clock.now()
        d = t.deliveries.c
        sent: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        final: list[dict[str, Any]] = []  # dead | skipped
        for o in outcomes:
            row = {
                "b_id": o.claimed.id,
                "b_attempts": o.claimed.attempts,
                "b_status": o.status,
                "b_error": (o.error or None) and o.error[:MAX_ERROR],
            }
            if o.status == "sent":
                sent.append(row | {"b_pmid": o.provider_message_id})
            elif o.status == "pending":
                pending.append(row | {"b_next": o.retry_at or now})
            else:
                final.append(row)
        base = update(t.deliveries).where(
            d.id == bindparam("b_id"), d.attempts == bindparam("b_attempts")
        )
        common: dict[str, Any] = {
            "status": bindparam("b_status"),
            "lease_until": None,
            "last_error": bindparam("b_error"),
        }
        with self.db.begin() as conn:
            if sent:
                conn.execute(
                    base.values(**common, sent_at=now, provider_message_id=bindparam("b_pmid")),
                    sent,
                )
            if pending:
                conn.execute(base.values(**common, next_attempt_at=bindparam("b_next")), pending)
            if final:
                conn.execute(base.values(**common), final)
            for o in outcomes:
                if o.site is not None:
                    exists = conn.execute(
                        select(t.site_messages.c.id).where(
                            t.site_messages.c.delivery_key == o.claimed.key
                        )
                    ).first()
                    if exists is None:
                        conn.execute(insert(t.site_messages), [o.site | {"created_at": now}])

    # -- sending ---------------------------------------------------------------------------
    async def dispatch_once(self, limit: int = 500) -> int:
        """Claim, send and record one batch; return how many deliveries were handled."""
        claimed_at = time.monotonic()
        claimed, recipients = await asyncio.to_thread(self.claim, limit)
        if not claimed:
            return 0
        outcomes = await self._send_batch(claimed, recipients)
        await asyncio.to_thread(self.record_within_lease, outcomes, claimed_at)
        return len(claimed)

    async def drain(self, limit: int = 500, *, stop: Callable[[], bool] | None = None) -> int:
        """Dispatch batch after batch until nothing is due (or ``stop()``), recording each
        batch's results while the next batch is being sent: the database work hides behind
        the network wait. Safe because rows being recorded are leased, never re-claimed."""
        total = 0
        recording: asyncio.Task[None] | None = None
        try:
            while not (stop and stop()):
                claimed_at = time.monotonic()
                claimed, recipients = await asyncio.to_thread(self.claim, limit)
                if not claimed:
                    break
                outcomes = await self._send_batch(claimed, recipients)
                if recording is not None:
                    await recording
                recording = asyncio.create_task(
                    asyncio.to_thread(self.record_within_lease, outcomes, claimed_at)
                )
                total += len(claimed)
        finally:
            if recording is not None:
                await recording
        return total

    async def _send_batch(
        self, claimed: list[Claimed], recipients: Mapping[str, Recipient]
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        singles: list[Claimed] = []
        audience: dict[tuple[str, str], list[Claimed]] = defaultdict(list)
        for c in claimed:
            if c.customer_id not in recipients:
                outcomes.append(Outcome(c, "skipped", error="customer erased or unknown"))
            elif c.channel not in self.channels:
                outcomes.append(
                    Outcome(
                        c,
                        "dead",
                        error=f"channel {c.channel!r} is not "
                        "configured (check [channels] in the config)",
                    )
                )
            elif c.operation in ("audience_add", "audience_remove") and isinstance(
                self.channels[c.channel], AudienceChannel
            ):
                audience[(c.channel, c.operation)].append(c)
            elif c.operation == "audience_remove":
                outcomes.append(Outcome(c, "sent", provider_message_id=None))
            else:
                singles.append(c)
        outcomes += await asyncio.gather(
            *(self._send_one(c, recipients[c.customer_id]) for c in singles)
        )
        for batch in await asyncio.gather(
            *(self._audience(ch, op, items, recipients) for (ch, op), items in audience.items())
        ):
            outcomes += batch
        added = [
            o for o in outcomes if o.status == "sent" and o.claimed.operation == "audience_add"
        ]
        if added:
            await self._undo_adds_of_erased(added, recipients)
        return outcomes

    def _erased(self, customer_ids: list[str]) -> set[str]:
        c = t.customers.c
        with self.db.connect() as conn:
            rows = conn.execute(
                select(c.id).where(c.id.in_(customer_ids), c.erased_at.is_not(None))
            )
            return {r.id for r in rows}

    async def _undo_adds_of_erased(
        self, added: list[Outcome], recipients: Mapping[str, Recipient]
    ) -> None:
        """A customer erased while their audience add was in flight (claimed before the
        erasure, sent after it) must not stay in the ad audience: the erasure's own removal
        ran before this add. The batch still holds their identifiers, so remove them now."""
        erased = await asyncio.to_thread(
            self._erased, sorted({o.claimed.customer_id for o in added})
        )
        by_channel: dict[str, list[Recipient]] = defaultdict(list)
        for o in added:
            if o.claimed.customer_id in erased:
                by_channel[o.claimed.channel].append(recipients[o.claimed.customer_id])
        for channel, members in by_channel.items():
            adapter = self.channels[channel]
            if not isinstance(adapter, AudienceChannel):
                continue
            try:
                await adapter.remove(
                    members, batch_key=f"{channel}-erased-{members[0].customer_id}"
                )
            except Exception:  # leave a trace an operator can act on; nothing to retry with
                log.exception(
                    "erased customers were added to an audience and could not be removed",
                    channel=channel,
                    count=len(members),
                )

    def _limit(self, channel: str) -> asyncio.Semaphore:
        sem = self._limits.get(channel)
        if sem is None:
            sem = self._limits[channel] = asyncio.Semaphore(self.settings.concurrency_per_channel)
        return sem

    def build_delivery(self, c: Claimed, recipient: Recipient) -> Delivery:
        """Render the template (tracking links for email) into the Delivery an adapter gets.
        Raises PermanentError when the template cannot be rendered for this customer."""
        channel = self.channels[c.channel]
        content: dict[str, str] = {}
        unsubscribe: str | None = None
        now = self.clock.now()
        if c.template:
            try:
                content = self.templates.render(
                    c.template,
                    recipient=recipient,
                    event=c.payload.get("event") or {},
                    journey={"name": c.journey},
                    step={"id": c.step},
                    now=now,
                )
            except (KeyError, ValueError) as exc:
                raise PermanentError(f"template {c.template!r}: {exc}") from exc
            except Exception as exc:  # a template error is this delivery's, not the batch's
                raise PermanentError(f"template {c.template!r}: {exc}") from exc
        if channel.medium == "email":
            tracked = apply_tracking(
                content, self.tracking, delivery_key=c.key, customer_id=c.customer_id, now=now
            )
            content, unsubscribe = tracked.content, tracked.unsubscribe_url
        return Delivery(
            idempotency_key=c.key,
            channel=c.channel,
            journey=c.journey or "",
            step=c.step or "",
            recipient=recipient,
            content=content,
            unsubscribe_url=unsubscribe,
            metadata={"arm": c.payload.get("arm"), "version": c.payload.get("version")},
        )

    async def _send_one(self, c: Claimed, recipient: Recipient) -> Outcome:
        try:
            delivery = self.build_delivery(c, recipient)
            async with self._limit(c.channel):
                result = await self.channels[c.channel].send(delivery)
        except (RetryableError, PermanentError) as exc:
            return self._failed(c, exc)
        except Exception as exc:  # an adapter bug must not lose the row: retry, then dead
            log.exception("adapter raised an unexpected error", channel=c.channel, key=c.key)
            return self._failed(c, RetryableError(f"{type(exc).__name__}: {exc}"))
        return self._sent(c, result)

    async def _audience(
        self,
        channel: str,
        operation: str,
        items: list[Claimed],
        recipients: Mapping[str, Recipient],
    ) -> list[Outcome]:
        adapter = self.channels[channel]
        assert isinstance(adapter, AudienceChannel)
        members = [recipients[c.customer_id] for c in items]
        batch_key = f"{channel}-{operation}-{min(c.id for c in items)}-{len(items)}"
        try:
            async with self._limit(channel):
                if operation == "audience_add":
                    await adapter.add(members, batch_key=batch_key)
                else:
                    await adapter.remove(members, batch_key=batch_key)
        except (RetryableError, PermanentError) as exc:
            return [self._failed(c, exc) for c in items]
        except Exception as exc:
            log.exception("audience adapter raised an unexpected error", channel=channel)
            return [self._failed(c, RetryableError(f"{type(exc).__name__}: {exc}")) for c in items]
        return [Outcome(c, "sent", provider_message_id=batch_key) for c in items]

    def _sent(self, c: Claimed, result: SendResult) -> Outcome:
        site = None
        if result.site_message is not None:
            m = result.site_message
            site = {
                "delivery_key": c.key,
                "customer_id": c.customer_id,
                "channel": c.channel,
                "slot": m.slot,
                "html": m.html,
                "expires_at": m.expires_at,
            }
        return Outcome(c, "sent", provider_message_id=result.provider_message_id, site=site)

    def _failed(self, c: Claimed, exc: Exception) -> Outcome:
        now = self.clock.now()
        if isinstance(exc, PermanentError):
            log.warning("delivery dead", key=c.key, channel=c.channel, reason=str(exc))
            return Outcome(c, "dead", error=f"permanent: {exc}")
        if c.attempts >= self.settings.max_attempts:
            log.warning("delivery dead after retries", key=c.key, attempts=c.attempts)
            return Outcome(c, "dead", error=f"gave up after {c.attempts} attempts: {exc}")
        delay = backoff(c.attempts, self.settings, self.rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(float(retry_after), 0.0) + self.rng.uniform(0, 1)
        return Outcome(
            c, "pending", error=f"retryable: {exc}", retry_at=now + timedelta(seconds=delay)
        )

    async def run_until_idle(self, limit: int = 500) -> int:
        return await self.drain(limit)

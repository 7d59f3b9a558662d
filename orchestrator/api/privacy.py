"""GDPR: everything parcours holds about a customer (export), and erasure.

Erasure must leave only anonymous counts, and must still take the customer out of every
paid audience. The catch: the dispatcher skips erased customers (it has no identifiers to
send), and the ad platforms need the identifiers (which their adapters hash) to find the
member to remove. So erasure runs in this order, the simplest order that is correct:

1. end every live enrollment with ``engine.cancel(..., "erased")``, which queues the
   audience removals exactly as a conversion would;
2. send those removals right away, from this request, with the identifiers still in
   hand, and mark their outbox rows ``sent``. If a platform fails with a retryable error
   the request answers 503 and **nothing is erased yet**: the caller retries (the
   removals stay queued for the dispatcher meanwhile). A permanent error (the audience no
   longer exists) cannot be retried, so it is recorded on the row and erasure proceeds;
3. blank or delete the personal data everywhere, in one transaction: profile (email,
   phone, traits, consent, timezone) emptied and ``erased_at`` set; events' properties,
   traits and context emptied (and unprocessed ones closed so they never enroll anyone);
   enrollment contexts and delivery payloads emptied; other queued deliveries skipped;
   site messages and anonymous-id links deleted; rows kept under the customer's
   anonymous ids before they were linked (``anon:<id>``) moved to the customer id.

What remains is the customer id (the shop's own pseudonymous key, needed so that the
dispatcher and the API recognise the erased profile), event names and times, states and
transitions: the counts reports are made of. Do not use email addresses as user ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import Connection, delete, select, update

from channels.base import AudienceChannel, PermanentError, Recipient, RetryableError
from orchestrator.api.errors import ApiError
from orchestrator.api.state import ApiState
from orchestrator.db import tables as t
from orchestrator.db.sql import lock_customers

log = structlog.get_logger("parcours.api.privacy")


class Removal(BaseModel):
    channel: str
    delivery_key: str
    status: str
    error: str | None = None


class Erasure(BaseModel):
    customer_id: str
    erased_at: datetime
    enrollments_ended: int
    audience_removals: list[Removal]


def related_ids(conn: Connection, customer_id: str) -> list[str]:
    """The customer and the ``anon:`` profiles of their linked anonymous ids."""
    a = t.anonymous_ids.c
    anon = conn.execute(select(a.anonymous_id).where(a.customer_id == customer_id)).scalars()
    return [customer_id, *(f"anon:{x}" for x in sorted(anon))]


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(query)]


def export(state: ApiState, customer_id: str) -> dict[str, Any] | None:
    """Every row that concerns the customer, table by table; None if nothing does."""
    with state.reader.connect() as conn:
        ids = related_ids(conn, customer_id)
        out: dict[str, Any] = {
            "customer_id": customer_id,
            "customers": sorted(  # the customer first, then their anonymous profiles
                _rows(conn, select(t.customers).where(t.customers.c.id.in_(ids))),
                key=lambda r: (r["id"] != customer_id, r["id"]),
            ),
            "anonymous_ids": _rows(
                conn, select(t.anonymous_ids).where(t.anonymous_ids.c.customer_id == customer_id)
            ),
        }
        for table, order in (
            (t.events, t.events.c.id),
            (t.enrollments, t.enrollments.c.entered_at),
            (t.history, t.history.c.id),
            (t.deliveries, t.deliveries.c.id),
            (t.site_messages, t.site_messages.c.id),
            (t.audience_memberships, t.audience_memberships.c.added_at),
        ):
            out[table.name] = _rows(
                conn, select(table).where(table.c.customer_id.in_(ids)).order_by(order)
            )
    if not any(out[k] for k in out if k != "customer_id"):
        return None
    return out


def _recipient(conn: Connection, customer_id: str) -> Recipient | None:
    row = conn.execute(select(t.customers).where(t.customers.c.id == customer_id)).first()
    if row is None:
        return None
    traits = dict(row.traits or {})
    consent = {
        k: bool(v.get("granted")) if isinstance(v, dict) else bool(v)
        for k, v in (row.consent or {}).items()
    }
    return Recipient(
        customer_id=row.id,
        email=row.email,
        phone=row.phone,
        external_id=str(traits.get("external_id") or row.id),
        timezone=row.timezone,
        traits=traits,
        consent=consent,
    )


def _prepare(state: ApiState, customer_id: str) -> tuple[list[str], bool]:
    """Live enrollment ids, and whether anything at all is known of the customer."""
    with state.reader.connect() as conn:
        e = t.enrollments.c
        ids = related_ids(conn, customer_id)
        live = list(
            conn.execute(select(e.id).where(e.customer_id.in_(ids), e.status == "live")).scalars()
        )
        known = (
            conn.execute(select(t.customers.c.id).where(t.customers.c.id == customer_id)).first()
            is not None
            or conn.execute(
                select(t.events.c.id).where(t.events.c.customer_id == customer_id).limit(1)
            ).first()
            is not None
        )
    return live, known


def _pending_removals(
    state: ApiState, customer_id: str
) -> tuple[list[tuple[int, str, str]], Recipient | None]:
    d = t.deliveries.c
    with state.reader.connect() as conn:
        rows = conn.execute(
            select(d.id, d.idempotency_key, d.channel).where(
                d.customer_id == customer_id,
                d.operation == "audience_remove",
                d.status.in_(("pending", "sending")),
            )
        ).all()
        return [(r.id, r.idempotency_key, r.channel) for r in rows], _recipient(conn, customer_id)


async def _remove_from_audiences(state: ApiState, customer_id: str) -> list[Removal]:
    pending, recipient = await run_in_threadpool(_pending_removals, state, customer_id)
    results: list[tuple[int, Removal]] = []
    for row_id, key, channel_name in pending:
        channel = state.runtime.channels.get(channel_name)
        if channel is None:
            results.append(
                (
                    row_id,
                    Removal(
                        channel=channel_name,
                        delivery_key=key,
                        status="dead",
                        error="channel not configured",
                    ),
                )
            )
            continue
        if isinstance(channel, AudienceChannel) and recipient is not None:
            try:
                await channel.remove([recipient], batch_key=key)
            except RetryableError as exc:
                log.warning("audience removal failed; erasure postponed", channel=channel_name)
                raise ApiError(
                    503,
                    f"removing the customer from audience {channel_name!r} failed ({exc}); "
                    "nothing was erased yet, retry the request",
                    code="retry",
                    headers={"Retry-After": str(int(exc.retry_after or 30))},
                ) from None
            except PermanentError as exc:
                results.append(
                    (
                        row_id,
                        Removal(
                            channel=channel_name,
                            delivery_key=key,
                            status="dead",
                            error=str(exc)[:500],
                        ),
                    )
                )
                continue
        results.append((row_id, Removal(channel=channel_name, delivery_key=key, status="sent")))
    if results:
        await run_in_threadpool(_mark_removals, state, results)
    return [r for _, r in results]


def _mark_removals(state: ApiState, results: Sequence[tuple[int, Removal]]) -> None:
    rt = state.runtime
    d = t.deliveries.c
    with state.writing() as conn:
        now = rt.clock.now()
        for row_id, r in results:
            values: dict[str, Any] = {
                "status": r.status,
                "lease_until": None,
                "last_error": r.error,
            }
            if r.status == "sent":
                values |= {"sent_at": now, "provider_message_id": r.delivery_key}
            conn.execute(
                update(t.deliveries).where(d.id == row_id).values(attempts=d.attempts + 1, **values)
            )


def _blank(state: ApiState, customer_id: str) -> datetime:
    rt = state.runtime
    with state.writing() as conn:
        now = rt.clock.now()
        ids = related_ids(conn, customer_id)
        # The engine's per-customer lock: an inbox batch or a segment sweep holding this
        # customer commits first, and what it wrote (internal events included) is then
        # blanked below instead of being applied after the erasure.
        lock_customers(conn, ids, wait=True)
        c, ev, en, d = t.customers.c, t.events.c, t.enrollments.c, t.deliveries.c
        conn.execute(
            update(t.customers)
            .where(c.id.in_(ids))
            .values(
                email=None,
                phone=None,
                timezone=None,
                traits={},
                consent={},
                erased_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            update(t.events)
            .where(ev.customer_id.in_(ids), ev.processed_at.is_(None))
            .values(processed_at=now, error="customer erased")
        )
        conn.execute(
            update(t.events)
            .where(ev.customer_id.in_(ids))
            .values(properties={}, traits={}, context={}, anonymous_id=None)
        )
        conn.execute(update(t.enrollments).where(en.customer_id.in_(ids)).values(context={}))
        conn.execute(
            update(t.deliveries)
            .where(d.customer_id.in_(ids), d.status.in_(("pending", "sending")))
            .values(status="skipped", lease_until=None, last_error="customer erased")
        )
        conn.execute(
            update(t.deliveries)
            .where(d.customer_id.in_(ids), d.status != "skipped")
            .values(last_error=None)
        )
        conn.execute(update(t.deliveries).where(d.customer_id.in_(ids)).values(payload={}))
        conn.execute(delete(t.site_messages).where(t.site_messages.c.customer_id.in_(ids)))
        # Segment memberships are a profile of the customer: gone with the rest.
        conn.execute(
            delete(t.segment_memberships).where(t.segment_memberships.c.customer_id.in_(ids))
        )
        conn.execute(delete(t.anonymous_ids).where(t.anonymous_ids.c.customer_id == customer_id))
        # Profiles kept under an anonymous id before it was linked (``anon:<device id>``)
        # are folded into the erased customer: the device id is personal data too.
        anon = ids[1:]
        if anon:
            for table in (
                t.events,
                t.enrollments,
                t.history,
                t.deliveries,
                t.audience_memberships,
            ):
                conn.execute(
                    update(table)
                    .where(table.c.customer_id.in_(anon))
                    .values(customer_id=customer_id)
                )
            conn.execute(delete(t.customers).where(c.id.in_(anon)))
        return now


async def erase(state: ApiState, customer_id: str) -> Erasure:
    live, known = await run_in_threadpool(_prepare, state, customer_id)
    if not known and not live:
        raise ApiError(404, f"no customer {customer_id!r}")
    ended = 0
    for enrollment in live:
        if await run_in_threadpool(state.runtime.engine.cancel, enrollment, "erased"):
            ended += 1
    removals = await _remove_from_audiences(state, customer_id)
    erased_at = await run_in_threadpool(_blank, state, customer_id)
    log.info("customer erased", enrollments_ended=ended, removals=len(removals))
    return Erasure(
        customer_id=customer_id,
        erased_at=erased_at,
        enrollments_ended=ended,
        audience_removals=removals,
    )

"""Writing the events the API itself observes (opens, clicks, unsubscribes, provider
callbacks, site impressions) through the same door as every other event:
``orchestrator.ingest.record``, so the engine treats them exactly like ingested ones.

Their ``messageId`` is derived from what they are about, never random, so that a repeat
(a second click on the same link, a provider retrying its webhook) is deduplicated by the
inbox instead of moving a customer twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from orchestrator.db import tables as t
from orchestrator.db.sql import lock_rows
from orchestrator.ingest import MAX_ID, EventIn


def message_id(prefix: str, *parts: str) -> str:
    """``prefix:part:part``, or ``prefix:<sha256>`` when that would be too long."""
    plain = ":".join((prefix, *parts))
    if len(plain) <= MAX_ID:
        return plain
    return f"{prefix}:{hashlib.sha256(plain.encode('utf-8', 'surrogatepass')).hexdigest()}"


def internal_event(
    *,
    customer_id: str,
    name: str,
    message: str,
    occurred_at: datetime,
    properties: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> EventIn:
    return EventIn.model_validate(
        {
            "type": "track",
            "userId": customer_id,
            "event": name,
            "messageId": message,
            "timestamp": occurred_at,
            "properties": dict(properties),
            "context": dict(context or {}),
        }
    )


def erased_among(conn: Connection, customer_ids: Iterable[str]) -> set[str]:
    """The customers of ``customer_ids`` that were erased: nothing more is recorded for
    them, or an old email's pixel would start a new profile of a forgotten person."""
    ids = sorted(set(customer_ids))
    found: set[str] = set()
    c = t.customers.c
    for i in range(0, len(ids), 900):
        rows = conn.execute(
            select(c.id).where(c.id.in_(ids[i : i + 900]), c.erased_at.is_not(None))
        )
        found.update(r.id for r in rows)
    return found


def revoke_consent(
    conn: Connection, customer_id: str, channel: str, source: str, at: datetime
) -> bool:
    """Record an opt-out of ``channel`` in ``customers.consent``; False when the customer
    is unknown. The first opt-out's time and source are kept on repeats."""
    c = t.customers.c
    row = conn.execute(lock_rows(conn, select(c.consent).where(c.id == customer_id))).first()
    if row is None:
        return False
    consent = dict(row.consent or {})
    current = consent.get(channel)
    if isinstance(current, dict) and current.get("granted") is False:
        return True
    consent[channel] = {"granted": False, "source": source, "at": at.isoformat()}
    conn.execute(update(t.customers).where(c.id == customer_id).values(consent=consent))
    return True


def delivery_channel(conn: Connection, delivery_key: str) -> str | None:
    d = t.deliveries.c
    return conn.execute(
        select(d.channel).where(d.idempotency_key == delivery_key)
    ).scalar_one_or_none()

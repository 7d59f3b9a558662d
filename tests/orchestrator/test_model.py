"""Enrollment ids: deterministic (crash re-runs write the same rows) and time-ordered
(indexes keyed by them grow at one end instead of on random pages)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from orchestrator.model import enrollment_id

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_the_same_entering_event_gives_the_same_id() -> None:
    a = enrollment_id("cart-recovery", "ann", "c1", "msg-1", T0)
    assert a == enrollment_id("cart-recovery", "ann", "c1", "msg-1", T0)
    # Any other journey, customer, key or cause is another enrollment.
    others = {
        enrollment_id("win-back", "ann", "c1", "msg-1", T0),
        enrollment_id("cart-recovery", "bob", "c1", "msg-1", T0),
        enrollment_id("cart-recovery", "ann", "c2", "msg-1", T0),
        enrollment_id("cart-recovery", "ann", "c1", "msg-2", T0),
    }
    assert a not in others and len(others) == 4
    assert len(a) <= 40  # the column's width


def test_ids_sort_in_the_order_their_events_occurred() -> None:
    rng = random.Random(3)
    moments = [T0 + timedelta(milliseconds=rng.randrange(10**11)) for _ in range(500)]
    moments = sorted(set(moments))
    ids = [enrollment_id("j", f"c{rng.random()}", "", "x", at) for at in moments]
    assert ids == sorted(ids)


def test_times_in_another_zone_give_the_same_id() -> None:
    cet = T0.astimezone(ZoneInfo("Europe/Amsterdam"))
    assert cet.utcoffset() != timedelta(0)
    assert enrollment_id("j", "c", "", "x", T0) == enrollment_id("j", "c", "", "x", cet)

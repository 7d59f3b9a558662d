"""The cart-recovery example walked step by step on a virtual clock: the escalation a
journey designer wrote, exactly as customers will live it."""

from __future__ import annotations

import pytest

from orchestrator.db import tables as t
from tests.orchestrator.conftest import Harness


def abandon(h: Harness, user: str = "ann", cart: str = "c1", total: float = 30.0) -> None:
    h.identify(user, email=f"{user}@example.nl", first_name=user.title())
    h.event(user, "cart_abandoned", cart_id=cart, total=total)


def test_no_reaction_escalates_email_then_banner_then_paid_audience(harness: Harness) -> None:
    h = harness
    abandon(h)
    enr = h.one("ann")
    assert (enr.state, enr.status) == ("wait_email", "live")
    assert [d.channel for d in h.deliveries("ann")] == ["email"]
    assert enr.wake_at == h.clock.now() + __import__("datetime").timedelta(days=2)

    h.advance(days=1, hours=23)  # not yet due
    assert h.one("ann").state == "wait_email"
    h.advance(hours=1)
    assert h.one("ann").state == "wait_site"
    assert [d.channel for d in h.deliveries("ann")] == ["email", "site"]

    h.advance(days=3)
    enr = h.one("ann")
    assert enr.state == "in_audience"
    ops = [(d.channel, d.operation) for d in h.deliveries("ann")]
    assert ops[-1] == ("retargeting", "audience_add")

    h.advance(days=7)
    enr = h.one("ann")
    assert (enr.status, enr.exit_reason, enr.state) == ("ended", "no_conversion", "expired")
    assert [(d.channel, d.operation) for d in h.deliveries("ann")][-1] == (
        "retargeting",
        "audience_remove",
    )
    assert h.history("ann") == [
        (None, "reminder_email", "enter"),
        ("reminder_email", "wait_email", "advance"),
        ("wait_email", "site_banner", "timeout"),
        ("site_banner", "wait_site", "advance"),
        ("wait_site", "retarget", "timeout"),
        ("retarget", "in_audience", "advance"),
        ("in_audience", "expired", "advance"),
    ]


def test_email_reaction_to_this_message_stops_the_escalation(harness: Harness) -> None:
    h = harness
    abandon(h)
    key = h.deliveries("ann")[0].idempotency_key
    # A click on some other message does not count: the wait matches the message just sent.
    h.event("ann", "email.clicked", delivery_key="another-message")
    assert h.one("ann").state == "wait_email"
    h.event("ann", "email.opened", delivery_key=key)
    assert h.one("ann").state == "engaged"
    h.advance(days=30)
    enr = h.one("ann")
    assert (enr.status, enr.exit_reason) == ("ended", "reacted")
    # Owned channel worked: no banner, never a paid audience.
    assert [d.channel for d in h.deliveries("ann")] == ["email"]


def test_site_click_after_banner_stops_before_paid(harness: Harness) -> None:
    h = harness
    abandon(h)
    h.advance(days=2)
    banner = next(d for d in h.deliveries("ann") if d.channel == "site")
    h.event("ann", "site.clicked", delivery_key=banner.idempotency_key)
    h.advance(days=10)
    assert h.one("ann").exit_reason == "reacted"
    assert "retargeting" not in {d.channel for d in h.deliveries("ann")}


@pytest.mark.parametrize(
    ("days", "resting_step", "removal_expected"),
    [(0, "wait_email", False), (2, "wait_site", False), (5, "in_audience", True)],
)
def test_goal_converts_from_every_step(
    harness: Harness, days: int, resting_step: str, removal_expected: bool
) -> None:
    h = harness
    abandon(h)
    h.advance(days=days)
    assert h.one("ann").state == resting_step
    h.event("ann", "order_completed", order_id="o1")
    enr = h.one("ann")
    assert (enr.status, enr.exit_reason, enr.state) == ("ended", "converted", "@converted")
    removals = [d for d in h.deliveries("ann") if d.operation == "audience_remove"]
    assert bool(removals) is removal_expected
    before = len(h.deliveries("ann"))
    h.advance(days=30)
    assert len(h.deliveries("ann")) == before  # nothing more is sent after converting


def test_goal_from_the_engaged_grace_step(harness: Harness) -> None:
    h = harness
    abandon(h)
    h.event("ann", "email.clicked", delivery_key=h.deliveries("ann")[0].idempotency_key)
    h.advance(days=1)
    h.event("ann", "order_completed")
    assert h.one("ann").exit_reason == "converted"


def test_exit_event_ends_the_journey_from_any_step(harness: Harness) -> None:
    h = harness
    abandon(h)
    h.advance(days=2)
    h.event("ann", "email.unsubscribed")
    enr = h.one("ann")
    assert (enr.status, enr.exit_reason) == ("ended", "email.unsubscribed")
    h.advance(days=20)
    assert [d.channel for d in h.deliveries("ann")] == ["email", "site"]


def test_one_live_enrollment_per_cart_and_reentry_with_a_new_cart(harness: Harness) -> None:
    h = harness
    abandon(h, cart="c1")
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)  # same cart again: no second
    assert len(h.enrollments("ann")) == 1
    h.event("ann", "cart_abandoned", cart_id="c2", total=12)  # another cart: its own journey
    assert sorted(e.key for e in h.enrollments("ann")) == ["c1", "c2"]
    h.event("ann", "order_completed")  # the goal converts both carts
    assert {e.exit_reason for e in h.enrollments("ann")} == {"converted"}
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)  # reentry: always
    live = [e for e in h.enrollments("ann") if e.status == "live"]
    assert [e.key for e in live] == ["c1"]


def test_entry_filter_and_missing_key_do_not_enroll(harness: Harness) -> None:
    h = harness
    h.event("bob", "cart_abandoned", cart_id="c1", total=0)  # where: properties.total > 0
    h.event("bob", "cart_abandoned", total=10)  # key properties.cart_id missing
    assert h.enrollments("bob") == []


def test_reentry_never_for_the_welcome_series(harness: Harness) -> None:
    h = harness
    h.identify("cem", email="cem@example.nl")
    h.event("cem", "signed_up")
    h.advance(days=40)
    h.event("cem", "signed_up")
    rows = h.enrollments("cem", "welcome-series")
    assert len(rows) == 1 and rows[0].status == "ended"


def test_paid_audience_kept_while_another_cart_still_needs_it(harness: Harness) -> None:
    h = harness
    abandon(h, cart="c1")
    h.advance(days=1)
    h.event("ann", "cart_abandoned", cart_id="c2", total=5)
    h.advance(days=4)  # c1 reaches the audience; c2 is one day behind
    h.advance(days=1)  # now c2 too
    assert h.count(t.audience_memberships) == 2
    c1 = next(e for e in h.enrollments("ann") if e.key == "c1")
    assert h.rt.engine.cancel(c1.id)
    removals = [d for d in h.deliveries("ann") if d.operation == "audience_remove"]
    assert removals == []  # c2 still keeps her in the retargeting audience
    h.event("ann", "order_completed")
    removals = [d for d in h.deliveries("ann") if d.operation == "audience_remove"]
    assert len(removals) == 1

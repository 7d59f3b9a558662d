"""The outbox: rendering, retries with backoff and Retry-After, dead letters with reasons."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import pytest

from channels.base import Delivery, PermanentError, Recipient, RetryableError, SendResult
from orchestrator.config import DispatchSettings
from orchestrator.dispatcher import backoff
from tests.orchestrator.conftest import Harness


class Flaky:
    """An email channel that fails as told, then succeeds."""

    kind = "owned"
    medium = "email"

    def __init__(self, errors: Sequence[Exception]) -> None:
        self.name = "email"
        self.errors = list(errors)
        self.keys: list[str] = []
        self.last: Delivery | None = None

    async def send(self, delivery: Delivery) -> SendResult:
        self.keys.append(delivery.idempotency_key)
        self.last = delivery
        if self.errors:
            raise self.errors.pop(0)
        return SendResult(provider_message_id=f"pm-{len(self.keys)}")

    async def aclose(self) -> None:
        return None


def _start(h: Harness, channel: Flaky, **traits: object) -> None:
    h.rt.channels["email"] = channel  # type: ignore[assignment]
    h.dispatcher.channels = h.rt.channels
    h.identify("ann", email="ann@example.nl", **traits)
    h.event("ann", "cart_abandoned", cart_id="c", total=5, cart_url="https://shop.example/c")


def test_rendered_email_carries_tracking_and_unsubscribe(harness: Harness) -> None:
    h = harness
    ch = Flaky([])
    _start(h, ch, first_name="Ann", locale="en")
    assert h.dispatch() == 1
    d = ch.last
    assert d is not None
    assert d.content["subject"] == "Your cart is waiting, Ann"  # the 'en' variant
    assert "https://shop.example/c" not in d.content["html"]  # links rewritten ...
    assert "/t/c/" in d.content["html"] and "/t/o/" in d.content["html"]  # ... and a pixel
    assert d.unsubscribe_url and "/u/" in d.unsubscribe_url
    row = h.deliveries("ann")[0]
    assert (row.status, row.provider_message_id) == ("sent", "pm-1")


def test_retryable_failures_back_off_and_keep_the_key(harness: Harness) -> None:
    h = harness
    ch = Flaky([RetryableError("503 from provider"), RetryableError("429", retry_after=120)])
    _start(h, ch)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("pending", 1)
    wait = row.next_attempt_at - h.clock.now()
    assert timedelta(seconds=15) <= wait <= timedelta(seconds=30)  # base 30 s, full jitter
    h.clock.advance(wait)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert row.attempts == 2 and "429" in row.last_error
    wait = row.next_attempt_at - h.clock.now()
    assert timedelta(seconds=120) <= wait <= timedelta(seconds=121)  # Retry-After honoured
    h.clock.advance(wait)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(set(ch.keys)) == 1 and len(ch.keys) == 3  # same key on every attempt


def test_permanent_failure_is_dead_with_its_reason(harness: Harness) -> None:
    h = harness
    _start(h, Flaky([PermanentError("550 mailbox does not exist")]))
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert row.status == "dead"
    assert "550 mailbox does not exist" in row.last_error


def test_exhausted_retries_end_dead(harness: Harness) -> None:
    h = harness
    h.rt.settings.dispatch.max_attempts = 3
    _start(h, Flaky([RetryableError("timeout")] * 5))
    for _ in range(3):
        h.dispatch()
        h.clock.advance(timedelta(hours=1))
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("dead", 3)
    assert "gave up after 3 attempts" in row.last_error


def test_missing_template_field_fails_that_delivery_clearly(
    harness: Harness, tmp_path: object
) -> None:
    h = harness
    ch = Flaky([])
    _start(h, ch)
    from channels.templates import TemplateSet

    broken = h.rt.templates.get("cart_reminder")
    assert broken is not None
    # A template that needs a field the customer lacks, without a default.
    import pathlib

    d = pathlib.Path(str(tmp_path)) / "t"
    d.mkdir()
    (d / "cart_reminder.yaml").write_text("subject: 'Hi {{ customer.nickname }}'\ntext: x\n")
    h.dispatcher.templates = TemplateSet.load(d)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert row.status == "dead"
    assert "nickname" in row.last_error
    assert ch.keys == []  # nothing half-rendered reached the provider


def test_adapter_bug_is_retried_not_lost(harness: Harness) -> None:
    h = harness
    _start(h, Flaky([ZeroDivisionError("oops")]))
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert row.status == "pending" and "ZeroDivisionError" in row.last_error


def test_backoff_grows_and_is_capped() -> None:
    s = DispatchSettings(backoff_base=10, backoff_max=100)
    rng = random.Random(4)
    ceilings = [max(backoff(a, s, rng) for _ in range(200)) for a in range(1, 8)]
    assert ceilings[0] <= 10 and ceilings[1] <= 20 and ceilings[2] <= 40
    assert all(c <= 100 for c in ceilings) and ceilings[-1] > 50


class Audience:
    kind = "paid"
    medium = "audience"

    def __init__(self) -> None:
        self.name = "retargeting"
        self.added: list[list[str]] = []
        self.removed: list[list[str]] = []

    async def send(self, delivery: Delivery) -> SendResult:
        raise AssertionError("audiences are added in batches")

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self.added.append([r.customer_id for r in recipients])

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self.removed.append([r.customer_id for r in recipients])

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("n", [3])
def test_audience_adds_are_batched_and_removed_on_conversion(harness: Harness, n: int) -> None:
    h = harness
    aud = Audience()
    h.rt.channels["retargeting"] = aud  # type: ignore[assignment]
    h.dispatcher.channels = h.rt.channels
    for i in range(n):
        h.identify(f"u{i}", email=f"u{i}@example.nl")
        h.event(f"u{i}", "cart_abandoned", cart_id="c", total=5)
    h.advance(days=5, minutes=1)
    h.dispatch()
    assert sorted(aud.added[0]) == [f"u{i}" for i in range(n)]  # one call for the batch
    h.event("u1", "order_completed")
    h.dispatch()
    assert aud.removed == [["u1"]]


def test_an_add_in_flight_during_erasure_is_taken_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed before the customer was erased, sent after: the dispatcher removes them
    again at once, with the identifiers the batch still holds."""
    from sqlalchemy import update

    from orchestrator.db import tables as t
    from orchestrator.dispatcher import Dispatcher

    h = harness
    aud = Audience()
    h.rt.channels["retargeting"] = aud  # type: ignore[assignment]
    h.dispatcher.channels = h.rt.channels
    h.identify("eve", email="eve@example.nl")
    h.event("eve", "cart_abandoned", cart_id="c", total=5)
    h.dispatch()  # the reminder email
    h.advance(days=5, minutes=1)  # the audience add is now due
    real_claim = Dispatcher.claim

    def claim_then_erase(self: Dispatcher, limit: int) -> object:
        claimed = real_claim(self, limit)
        with h.rt.db.begin() as conn:  # the erasure commits while the add is in flight
            conn.execute(
                update(t.customers).where(t.customers.c.id == "eve").values(erased_at=h.clock.now())
            )
        return claimed

    monkeypatch.setattr(Dispatcher, "claim", claim_then_erase)
    h.dispatch()
    assert aud.added == [["eve"]]
    assert aud.removed == [["eve"]]

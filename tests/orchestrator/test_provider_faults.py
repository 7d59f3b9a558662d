"""A provider that fails 30% of calls (5xx, 429 with Retry-After, timeouts): every delivery
still ends sent, or dead with its reason; none is lost, and every attempt of a delivery
carries its one idempotency key."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import timedelta

import httpx

from channels.webhook import WebhookChannelFactory
from orchestrator.db import tables as t
from tests.orchestrator.conftest import Harness


def test_thirty_percent_failures_end_sent_or_dead(harness: Harness) -> None:
    h = harness
    rng = random.Random(11)
    attempts: dict[str, int] = defaultdict(int)
    outcomes: Counter[str] = Counter()

    def provider(request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        attempts[key] += 1
        roll = rng.random()
        if roll < 0.10:
            outcomes["503"] += 1
            return httpx.Response(503, text="upstream unavailable")
        if roll < 0.20:
            outcomes["429"] += 1
            return httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")
        if roll < 0.30:
            outcomes["timeout"] += 1
            raise httpx.ReadTimeout("provider took too long", request=request)
        if roll < 0.31:
            outcomes["400"] += 1
            return httpx.Response(400, text="payload rejected")
        outcomes["ok"] += 1
        return httpx.Response(200, json={"id": key})

    webhook = WebhookChannelFactory(transport=httpx.MockTransport(provider)).build(
        "email",
        {"url": "http://127.0.0.1:9/hook", "secret_env": "HOOK_SECRET", "medium": "email"},
        {"HOOK_SECRET": "s3cret"},
    )
    h.rt.channels["email"] = webhook
    h.dispatcher.channels = h.rt.channels
    h.rt.settings.dispatch.max_attempts = 6
    for i in range(200):
        h.event(f"u{i}", "cart_abandoned", cart_id="c", total=5)
    for _ in range(400):  # a day of retries in virtual time
        h.dispatch()
        h.clock.advance(timedelta(minutes=4))
    rows = h.deliveries()
    assert len(rows) == 200 == h.count(t.deliveries)
    statuses = Counter(r.status for r in rows)
    assert set(statuses) <= {"sent", "dead"}, statuses  # nothing pending, nothing lost
    assert statuses["sent"] >= 190
    for r in rows:
        assert attempts[r.idempotency_key] == r.attempts  # every attempt reached the provider
        if r.status == "dead":
            assert "400" in r.last_error or "gave up after 6 attempts" in r.last_error
    assert outcomes["503"] and outcomes["429"] and outcomes["timeout"]
    assert set(attempts) == {r.idempotency_key for r in rows}

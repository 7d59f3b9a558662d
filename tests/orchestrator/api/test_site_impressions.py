"""Site-message impressions are written behind the request, in batches: what a shop's
page view leaves in the inbox, when (on the interval, on shutdown, at once when many are
waiting), and that none is counted twice or written for an erased customer."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import insert, update
from starlette.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.impressions import Impression, ImpressionBuffer
from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.conftest import SendGridKeys
from tests.orchestrator.api.support import ENV, SITE, events_named, make_runtime, make_settings

ON_POSTGRES_TOO = True  # the read runs in the thread pool there, on the loop on SQLite
AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def impression(n: int, day: str = "2026-01-05") -> Impression:
    return Impression(f"u{n}", f"d{n}", "banner", "site", day, AT)


def add_messages(runtime: Runtime, customers: int) -> None:
    now = runtime.clock.now()
    with runtime.db.begin() as conn:
        conn.execute(
            insert(t.site_messages),
            [
                {
                    "delivery_key": f"d-{i}",
                    "customer_id": f"u{i}",
                    "channel": "site",
                    "slot": "banner",
                    "html": "<p>hi</p>",
                    "created_at": now,
                }
                for i in range(customers)
            ],
        )


def runtime_with_interval(
    database: str, keys: SendGridKeys, clock: VirtualClock, seconds: float
) -> Runtime:
    settings = make_settings(
        database,
        keys.public_b64,
        http={"base_url": "http://testserver", "impression_flush_seconds": seconds},
    )
    return make_runtime(settings, clock)


def test_a_page_view_is_answered_before_and_recorded_within_the_interval(
    api_database: str, sendgrid_keys: SendGridKeys, clock: VirtualClock
) -> None:
    runtime = runtime_with_interval(api_database, sendgrid_keys, clock, 0.05)
    add_messages(runtime, 3)
    with TestClient(create_app(runtime, env=ENV)) as client:
        for i in range(3):
            r = client.get(f"/v1/site/messages?userId=u{i}", headers=SITE)
            assert [m["delivery_key"] for m in r.json()["messages"]] == [f"d-{i}"]
        deadline = time.monotonic() + 5
        while len(events_named(runtime, "site.viewed")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        viewed = events_named(runtime, "site.viewed")
        assert sorted((e.customer_id, e.properties["delivery_key"]) for e in viewed) == [
            ("u0", "d-0"),
            ("u1", "d-1"),
            ("u2", "d-2"),
        ]
        assert {e.occurred_at for e in viewed} == {clock.now()}
        metrics = client.get("/metrics").text
        assert 'parcours_api_reactions_total{event="site.viewed"} 3.0' in metrics
    runtime.db.dispose()


def test_buffered_impressions_are_written_when_the_api_shuts_down(
    api_database: str, sendgrid_keys: SendGridKeys, clock: VirtualClock
) -> None:
    runtime = runtime_with_interval(api_database, sendgrid_keys, clock, 60)
    add_messages(runtime, 20)
    with TestClient(create_app(runtime, env=ENV)) as client:
        for i in range(20):
            assert client.get(f"/v1/site/messages?userId=u{i}", headers=SITE).status_code == 200
        assert events_named(runtime, "site.viewed") == []  # a minute to go
    assert len(events_named(runtime, "site.viewed")) == 20
    runtime.db.dispose()


def test_no_impression_is_written_for_a_customer_erased_before_the_write(
    api_database: str, sendgrid_keys: SendGridKeys, clock: VirtualClock
) -> None:
    runtime = runtime_with_interval(api_database, sendgrid_keys, clock, 60)
    add_messages(runtime, 2)
    with runtime.db.begin() as conn:
        conn.execute(
            insert(t.customers),
            [
                {"id": f"u{i}", "traits": {}, "created_at": clock.now(), "updated_at": clock.now()}
                for i in range(2)
            ],
        )
    with TestClient(create_app(runtime, env=ENV)) as client:
        client.get("/v1/site/messages?userId=u0", headers=SITE)
        client.get("/v1/site/messages?userId=u1", headers=SITE)
        with runtime.db.begin() as conn:
            conn.execute(
                update(t.customers).where(t.customers.c.id == "u0").values(erased_at=clock.now())
            )
    assert [e.customer_id for e in events_named(runtime, "site.viewed")] == ["u1"]
    runtime.db.dispose()


class Recorder:
    """A writer that keeps every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[list[Impression]] = []

    def __call__(self, batch: list[Impression]) -> int:
        self.batches.append(batch)
        return len(batch)


async def test_the_buffer_writes_each_impression_once_in_few_transactions() -> None:
    writer = Recorder()
    batches = writer.batches
    buffer = ImpressionBuffer(writer, interval=0.05, max_rows=100)
    for n in range(250):
        buffer.add([impression(n)])
        if n % 50 == 0:
            await asyncio.sleep(0)  # requests arrive while a write is in flight
    await asyncio.sleep(0.2)
    written = [i.delivery_key for batch in batches for i in batch]
    assert sorted(written) == sorted(f"d{n}" for n in range(250))
    assert len(batches) <= 5  # 250 rows, 100 a write at most when they pile up
    assert buffer.written == 250 and len(buffer) == 0
    await buffer.aclose()


async def test_the_buffer_waits_the_interval_then_writes() -> None:
    writer = Recorder()
    batches = writer.batches
    buffer = ImpressionBuffer(writer, interval=0.1)
    buffer.add([impression(1), impression(2)])
    await asyncio.sleep(0.02)
    assert batches == []
    await asyncio.sleep(0.2)
    assert [[i.delivery_key for i in b] for b in batches] == [["d1", "d2"]]


async def test_a_failed_write_is_retried_and_nothing_is_lost() -> None:
    calls: list[int] = []

    def flaky(batch: list[Impression]) -> int:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("database is locked")
        return len(batch)

    buffer = ImpressionBuffer(flaky, interval=0.02)
    buffer.add([impression(1)])
    await asyncio.sleep(0.05)
    buffer.add([impression(2)])
    await asyncio.sleep(0.1)
    assert calls[0] == 1 and sum(calls[1:]) == 2
    assert buffer.written == 2 and buffer.dropped == 0


async def test_a_full_buffer_drops_and_counts_instead_of_growing() -> None:
    def down(batch: list[Impression]) -> int:
        raise OSError("database unreachable")

    buffer = ImpressionBuffer(down, interval=0.01, max_rows=10_000, limit=5)
    buffer.add(impression(n) for n in range(8))
    assert (len(buffer), buffer.dropped) == (5, 3)
    await asyncio.sleep(0.05)
    buffer.add([impression(9)])
    assert len(buffer) == 5 and buffer.dropped == 4
    await buffer.aclose()  # the database is still down: the last rows are lost, counted
    assert (len(buffer), buffer.dropped) == (0, 9)


async def test_shutting_down_writes_what_is_left() -> None:
    buffer = ImpressionBuffer(Recorder(), interval=60)
    buffer.add([impression(1), impression(2)])
    await buffer.aclose()
    assert buffer.written == 2 and len(buffer) == 0

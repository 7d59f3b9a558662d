"""A crash between claiming and committing loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orchestrator.db import tables as t
from orchestrator.work import Work
from tests.orchestrator.conftest import Harness


class Crash(RuntimeError):
    pass


def test_crash_while_flushing_a_batch_rolls_back_and_rerun_writes_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    from orchestrator.ingest import EventIn, record

    with h.rt.db.begin() as conn:
        record(
            conn,
            [
                EventIn.model_validate(
                    {
                        "userId": f"u{i}",
                        "event": "cart_abandoned",
                        "messageId": f"e{i}",
                        "properties": {"cart_id": "c", "total": 5},
                    }
                )
                for i in range(50)
            ],
            h.clock.now(),
        )
    real_flush = Work.flush

    def flush_then_die(self: Work, conn: object) -> None:
        real_flush(self, conn)  # every row written ...
        raise Crash("process killed before COMMIT")  # ... and then the process dies

    monkeypatch.setattr(Work, "flush", flush_then_die)
    with pytest.raises(Crash):
        h.engine.process_inbox()
    # Nothing of the batch is visible: the transaction never committed.
    assert h.count(t.enrollments) == 0
    assert h.count(t.deliveries) == 0
    assert h.count(t.history) == 0

    monkeypatch.setattr(Work, "flush", real_flush)
    h.engine.run_until_idle()
    assert h.count(t.enrollments) == 50
    assert h.count(t.deliveries) == 50  # exactly one outbox row per intended message
    keys = {d.idempotency_key for d in h.deliveries()}
    assert len(keys) == 50
    # Re-running finds nothing more to do: the inbox was marked processed with the batch.
    assert h.engine.run_until_idle() == 0


def test_crash_while_firing_timers_leaves_them_due(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    h.event("ann", "cart_abandoned", cart_id="c", total=5)
    h.clock.advance(timedelta(days=2))
    real_flush = Work.flush

    def die(self: Work, conn: object) -> None:
        real_flush(self, conn)
        raise Crash("killed")

    monkeypatch.setattr(Work, "flush", die)
    with pytest.raises(Crash):
        h.engine.fire_due_timers()
    assert h.one("ann").state == "wait_email"  # the timeout is still pending ...
    monkeypatch.setattr(Work, "flush", real_flush)
    assert h.engine.fire_due_timers() == 1  # ... and fires exactly once afterwards
    assert h.engine.fire_due_timers() == 0
    assert [d.channel for d in h.deliveries("ann")] == ["email", "site"]


def test_worker_dying_after_claiming_deliveries_resends_with_the_same_key(
    harness: Harness,
) -> None:
    h = harness
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "cart_abandoned", cart_id="c", total=5)
    claimed, _ = h.dispatcher.claim(10)  # claimed, then the worker dies before sending
    assert len(claimed) == 1
    assert h.dispatch() == 0  # leased: no other worker takes it meanwhile
    h.clock.advance(timedelta(seconds=61))  # the lease runs out
    assert h.dispatch() == 1
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("sent", 2)
    sent = h.channel("email").sent
    assert [d.idempotency_key for d in sent] == [claimed[0].key]
    assert h.count(t.deliveries) == 1


def test_dispatcher_record_only_applies_to_its_own_attempt(harness: Harness) -> None:
    h = harness
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "cart_abandoned", cart_id="c", total=5)
    slow, _recipients = h.dispatcher.claim(10)
    h.clock.advance(timedelta(seconds=61))
    assert h.dispatch() == 1  # another worker re-sent it after the lease expired
    # The slow worker finally reports a failure: it must not overwrite the newer outcome.
    from orchestrator.dispatcher import Outcome

    h.dispatcher.record([Outcome(slow[0], "dead", error="late")])
    assert h.deliveries("ann")[0].status == "sent"
    assert asyncio.run(h.dispatcher.dispatch_once()) == 0

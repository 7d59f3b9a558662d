"""Scheduled entries enroll once per fire: a second replica firing the same cron entry, a
retry after an outage, or both at once never enroll anyone twice, even in a journey that
ends at once and lets customers re-enter."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from tests.orchestrator.conftest import Harness, HarnessFactory, with_journeys

WEEKLY = """
journey: weekly-tip
entry:
  schedule: "0 9 * * mon"
  reentry: always
steps:
  - id: tip
    type: send
    channel: email
    template: welcome_tips
  - id: done
    type: exit
"""


@pytest.fixture
def h(make_harness: HarnessFactory, tmp_path: Path) -> Harness:
    h = make_harness(journeys=with_journeys(tmp_path, {"weekly-tip.yaml": WEEKLY}))
    for user in ("ann", "bob"):
        h.identify(user, email=f"{user}@example.nl")
    return h


def tips(h: Harness) -> int:
    return sum(1 for d in h.deliveries() if d.journey == "weekly-tip")


def test_the_same_fire_twice_enrolls_once_and_the_next_fire_again(h: Harness) -> None:
    fired = h.clock.now()
    assert h.engine.enroll_scheduled("weekly-tip", fired) == 2
    # Another replica fired the same entry a few seconds later: the same minute.
    assert h.engine.enroll_scheduled("weekly-tip", fired + timedelta(seconds=20)) == 0
    assert tips(h) == 2
    next_week = fired + timedelta(days=7)
    h.clock.set(next_week)
    assert h.engine.enroll_scheduled("weekly-tip", next_week) == 2  # a new fire
    assert tips(h) == 4


def test_two_replicas_firing_at_once_enroll_each_customer_once(h: Harness) -> None:
    fired = h.clock.now()
    got: list[int] = []
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            got.append(h.engine.enroll_scheduled("weekly-tip", fired))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert sorted(got) == [0, 2]
    assert tips(h) == 2

"""The daemon's jobs as an operator relies on them: a cron entry that meets a database
outage is postponed, not lost, and runs again with the same moment (so the same ids)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from orchestrator.daemon import Workers, make_scheduler
from tests.orchestrator.conftest import HarnessFactory


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scheduled_entry_hit_by_an_outage_is_retried_with_the_same_moment(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness()
    workers = Workers(h.rt)
    calls: list[datetime] = []
    later: list[tuple[Any, list[Any], float]] = []
    workers.later = lambda job, args, seconds: later.append((job, args, seconds))

    def flaky(journey: str, fired_at: datetime, page: int = 1000) -> int:
        calls.append(fired_at)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return 3

    monkeypatch.setattr(h.rt.engine, "enroll_scheduled", flaky)
    workers.scheduled("win-back")  # the cron run meets the outage
    assert len(later) == 1
    job, args, seconds = later[0]
    assert args[0] == "win-back" and seconds == Workers.SCHEDULE_RETRY_SECONDS
    job(*args)  # the retry, as the scheduler runs it
    assert len(calls) == 2 and calls[0] == calls[1]  # the same fired_at: the same ids
    assert len(later) == 1  # succeeded: no further retry


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_other_errors_of_a_scheduled_entry_are_not_swallowed(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness()
    workers = Workers(h.rt)

    def broken(journey: str, fired_at: datetime, page: int = 1000) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(h.rt.engine, "enroll_scheduled", broken)
    with pytest.raises(ValueError, match="a bug"):
        workers.scheduled("win-back")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_scheduler_wires_retries_and_an_early_first_sweep(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    workers = Workers(h.rt)
    sched = make_scheduler(workers)
    assert workers.later is not None
    job = sched.get_job("segments")
    assert job is not None
    first = job.next_run_time
    assert first is not None
    seconds = (first - datetime.now(first.tzinfo)).total_seconds()
    assert 0 < seconds <= 61  # a minute after start, not an hour


def test_a_late_cron_run_names_the_fire_it_belongs_to() -> None:
    from datetime import UTC

    from apscheduler.triggers.cron import CronTrigger

    from orchestrator.daemon import cron_slot

    daily = CronTrigger.from_crontab("0 9 * * *", timezone="UTC")
    late = datetime(2026, 3, 2, 9, 1, 5, tzinfo=UTC)  # its thread was busy for a minute
    assert cron_slot(daily, late) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    every_quarter = CronTrigger.from_crontab("*/15 * * * *", timezone="UTC")
    assert cron_slot(every_quarter, late) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    amsterdam = CronTrigger.from_crontab("0 10 * * mon", timezone="Europe/Amsterdam")
    monday = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)  # 10:00:30 in Amsterdam (CET)
    assert cron_slot(amsterdam, monday) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_replicas_starting_a_fire_at_different_moments_name_the_same_fire(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC

    h = make_harness()
    fired: list[datetime] = []
    monkeypatch.setattr(
        h.rt.engine, "enroll_scheduled", lambda journey, at, page=1000: fired.append(at) or 0
    )
    workers = Workers(h.rt)
    make_scheduler(workers)  # registers win-back's trigger: "0 10 * * mon", Amsterdam
    for started in (
        datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 1, 40, tzinfo=UTC),
    ):
        h.clock.set(started)
        workers.scheduled("win-back")
    assert fired == [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)] * 2

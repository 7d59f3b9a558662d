"""Local time windows across timezones and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

from journeys.schema import Arm, ExperimentStep
from orchestrator.engine import pick_arm
from orchestrator.timewindows import is_inside, next_open, quiet_until, zone

AMS = zone("Europe/Amsterdam")


def test_next_open_waits_for_the_local_window() -> None:
    # 06:30 UTC in winter is 07:30 in Amsterdam: the 09:00 window opens at 08:00 UTC.
    now = datetime(2026, 1, 14, 6, 30, tzinfo=UTC)
    assert next_open(now, "09:00-17:00", AMS) == datetime(2026, 1, 14, 8, 0, tzinfo=UTC)
    inside = datetime(2026, 1, 14, 10, 0, tzinfo=UTC)
    assert next_open(inside, "09:00-17:00", AMS) == inside


def test_weekday_window_skips_the_weekend() -> None:
    saturday = datetime(2026, 1, 17, 12, 0, tzinfo=UTC)
    days = ["mon", "tue", "wed", "thu", "fri"]
    assert next_open(saturday, "09:00-17:00", AMS, days) == datetime(2026, 1, 19, 8, 0, tzinfo=UTC)


def test_dst_moves_the_utc_instant_not_the_local_time() -> None:
    # Amsterdam springs forward on 29 March 2026: 09:00 local is 08:00 UTC before, 07:00 after.
    before = next_open(datetime(2026, 3, 28, 20, 0, tzinfo=UTC), "09:00-17:00", AMS)
    after = next_open(datetime(2026, 3, 29, 20, 0, tzinfo=UTC), "09:00-17:00", AMS)
    assert before == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    assert after == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert before.astimezone(AMS).hour == after.astimezone(AMS).hour == 9


def test_quiet_hours_wrap_past_midnight_per_customer_timezone() -> None:
    late = datetime(2026, 1, 14, 22, 30, tzinfo=UTC)  # 23:30 in Amsterdam, 17:30 in New York
    assert quiet_until(late, "21:00-08:00", AMS) == datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    assert quiet_until(late, "21:00-08:00", zone("America/New_York")) == late
    assert is_inside(late, "21:00-08:00", AMS)


def test_unknown_timezone_falls_back() -> None:
    assert zone("Mars/Olympus", "Europe/Amsterdam") == AMS
    assert str(zone(None)) == "UTC"


def test_experiment_arms_are_sticky_and_follow_the_weights() -> None:
    step = ExperimentStep(
        id="x",
        type="experiment",
        arms=[
            Arm(name="a", weight=45, next="n"),
            Arm(name="b", weight=45, next="n"),
            Arm(name="control", weight=10, next="n", control=True),
        ],
    )
    counts = {"a": 0, "b": 0, "control": 0}
    for i in range(100_000):
        counts[pick_arm(step, "welcome", f"c{i}")] += 1
    assert abs(counts["a"] / 100_000 - 0.45) < 0.01
    assert abs(counts["control"] / 100_000 - 0.10) < 0.01
    assert all(
        pick_arm(step, "welcome", f"c{i}") == pick_arm(step, "welcome", f"c{i}") for i in range(100)
    )

"""Experiment statistics checked against published worked examples, so the numbers a
journey designer reads in ``parcours report`` are the ones a statistics book prints."""

from __future__ import annotations

import pytest

from journeys.schema import Arm, ExperimentStep
from orchestrator.engine import pick_arm
from orchestrator.stats import (
    ArmCounts,
    compare_arms,
    normal_cdf,
    normal_ppf,
    two_proportion_z_test,
    wilson_interval,
)


def test_normal_cdf_matches_the_table() -> None:
    assert normal_cdf(0) == 0.5
    assert normal_cdf(1.96) == pytest.approx(0.9750, abs=1e-4)
    assert normal_cdf(-1.645) == pytest.approx(0.0500, abs=1e-4)
    assert normal_ppf(0.975) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe, "Two-sided confidence intervals for the single proportion: comparison of
        # seven methods", Statistics in Medicine 17 (1998) 857-872, Table II, method 3
        # (Wilson score interval without continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(successes: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing observed: anything is possible
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 0.85  # never a degenerate [1, 1] like the Wald interval
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_z_test_matches_openintro_mammogram_example() -> None:
    # OpenIntro Statistics (4th ed.), section 6.2.3: breast cancer deaths, 500 of 44,425 in
    # the mammogram group vs 505 of 44,405 in the control group: Z = -0.17, p-value = 0.87.
    r = two_proportion_z_test(500, 44_425, 505, 44_405)
    assert r is not None
    assert round(r.z, 2) == -0.17
    assert round(r.p_value, 2) == 0.87


def test_z_test_matches_agresti_aspirin_example() -> None:
    # Agresti, An Introduction to Categorical Data Analysis (2nd ed.), section 2.2: the
    # Physicians' Health Study, myocardial infarction in 189 of 11,034 on placebo vs 104 of
    # 11,037 on aspirin; difference of proportions 0.0077, Pearson X^2 = 25.01 (= z^2 for
    # a 2x2 table), far beyond any significance level.
    r = two_proportion_z_test(189, 11_034, 104, 11_037)
    assert r is not None
    assert round(r.difference, 4) == 0.0077
    assert r.z**2 == pytest.approx(25.01, abs=0.01)
    assert r.p_value < 1e-6


def test_z_test_is_undefined_without_variation_or_customers() -> None:
    assert two_proportion_z_test(0, 100, 0, 100) is None
    assert two_proportion_z_test(3, 0, 1, 10) is None


def test_compare_arms_tests_each_arm_against_control_only() -> None:
    arms = [
        ArmCounts("discount", entered=4500, reacted=1300, converted=540),
        ArmCounts("tips", entered=4500, reacted=1200, converted=470),
        ArmCounts("control", entered=1000, reacted=0, converted=95, control=True),
    ]
    by = {a.name: a for a in compare_arms(arms)}
    assert by["control"].p_value is None and by["control"].lift is None
    assert by["discount"].rate == pytest.approx(0.12)
    assert by["discount"].lift == pytest.approx(0.12 - 0.095)
    assert by["discount"].significant is True  # z = 2.24, p = 0.025
    assert by["tips"].significant is False  # 10.4% vs 9.5%: could be luck
    assert by["discount"].ci_low < 0.12 < by["discount"].ci_high
    without_control = compare_arms([ArmCounts("a", 10, 1, 1), ArmCounts("b", 10, 1, 2)])
    assert all(a.p_value is None for a in without_control)


def test_sticky_arms_follow_uneven_weights_over_100k_customers() -> None:
    # The even 45/45/10 split of welcome-series is checked in test_timewindows.py; uneven
    # weights that do not sum to 100 must hold as well.
    step = ExperimentStep(
        id="offer",
        type="experiment",
        arms=[
            Arm(name="big", weight=7, next="n"),
            Arm(name="small", weight=2, next="n"),
            Arm(name="control", weight=1, next="n", control=True),
        ],
    )
    n = 100_000
    counts = {"big": 0, "small": 0, "control": 0}
    for i in range(n):
        counts[pick_arm(step, "win-back", f"cust-{i}")] += 1
    assert abs(counts["big"] / n - 0.7) < 0.01
    assert abs(counts["small"] / n - 0.2) < 0.01
    assert abs(counts["control"] / n - 0.1) < 0.01
    # Sticky: the same customer gets the same arm every time, in any process.
    assert {pick_arm(step, "win-back", "cust-42") for _ in range(5)} == {
        pick_arm(step, "win-back", "cust-42")
    }

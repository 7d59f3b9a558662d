"""The statistics behind experiment results: a conversion rate with its Wilson interval and
the two-proportion z-test of an arm against the control group.

Why these two: a journey designer asks "did the discount email bring more orders than
sending nothing, or is it luck?". The Wilson score interval stays honest at small counts
and rates near 0 or 1, where the textbook ``p ± z·sqrt(p(1-p)/n)`` interval collapses to a
point or leaves [0, 1]. The pooled two-proportion z-test is the test marketers meet in
every A/B-testing guide, so our p-values match what they can check by hand.

scipy is deliberately not a dependency for three formulas: the normal CDF is exact enough
from ``math.erf`` (double precision), and its inverse is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The z for a two-sided 95% interval, to the precision tables print it.
Z95 = 1.959963984540054


def normal_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def normal_ppf(p: float) -> float:
    """The x with P(Z <= x) = p (the inverse CDF), by bisection: 200 halvings of
    [-40, 40] are far below double precision, and it is called once per report."""
    if not 0.0 < p < 1.0:
        raise ValueError("a probability strictly between 0 and 1 is needed")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if normal_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def z_for(confidence: float) -> float:
    """The two-sided critical value: 0.95 -> 1.96."""
    if confidence == 0.95:
        return Z95
    return normal_ppf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (Wilson 1927; Newcombe 1998, method 3).
    With no observations the honest answer is "anything": (0, 1)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class ZTest:
    """The pooled two-proportion z-test of a against b (a - b)."""

    difference: float
    z: float
    p_value: float


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest | None:
    """Pooled two-proportion z-test, two-sided. None when it is undefined: an empty group,
    or no variation at all (every customer converted, or none did, in both groups)."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (p1 - p2) / se
    return ZTest(difference=p1 - p2, z=z, p_value=2 * (1 - normal_cdf(abs(z))))


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """What a report counts for one experiment arm."""

    name: str
    entered: int
    reacted: int
    converted: int
    control: bool = False


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One arm's rate with its interval, and how it compares with the control group."""

    name: str
    control: bool
    entered: int
    reacted: int
    converted: int
    rate: float
    ci_low: float
    ci_high: float
    #: rate minus the control's rate; None for the control itself or without one.
    lift: float | None = None
    z: float | None = None
    p_value: float | None = None
    significant: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_arms(
    arms: Sequence[ArmCounts], *, alpha: float = 0.05, confidence: float = 0.95
) -> list[ArmResult]:
    """Rates, Wilson intervals and, when one arm is the control, each other arm's z-test
    against it. An arm is ``significant`` when its p-value is below ``alpha``; no correction
    for several arms is made (say so when you read three arms at once)."""
    control = next((a for a in arms if a.control), None)
    out: list[ArmResult] = []
    for a in arms:
        lo, hi = wilson_interval(a.converted, a.entered, confidence)
        rate = a.converted / a.entered if a.entered else 0.0
        test = None
        if control is not None and a is not control:
            test = two_proportion_z_test(a.converted, a.entered, control.converted, control.entered)
        out.append(
            ArmResult(
                name=a.name,
                control=a.control,
                entered=a.entered,
                reacted=a.reacted,
                converted=a.converted,
                rate=rate,
                ci_low=lo,
                ci_high=hi,
                lift=test.difference if test else None,
                z=test.z if test else None,
                p_value=test.p_value if test else None,
                significant=(test.p_value < alpha) if test else None,
            )
        )
    return out


def weights_share(weights: Mapping[str, float]) -> dict[str, float]:
    """Arm weights as shares of 1, for comparing intended with observed allocation."""
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total else {}


__all__ = [
    "Z95",
    "ArmCounts",
    "ArmResult",
    "ZTest",
    "compare_arms",
    "normal_cdf",
    "normal_ppf",
    "two_proportion_z_test",
    "weights_share",
    "wilson_interval",
    "z_for",
]

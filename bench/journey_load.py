"""Loading and compiling a large journey set: parse -> validate -> compile.

``python -m bench.journey_load`` generates 1,000 journeys of 20 steps each (every step type,
history and trait conditions, experiments, a paid step behind owned timeouts, a loop through
a wait) and times ``journeys.load_texts`` on all of them at once, as the daemon does at
start-up. The target: under 2 seconds on a 2-core machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections.abc import Callable

from bench.report import emit
from journeys import Catalog, ChannelInfo, JourneySet, load_texts
from journeys.catalog import Catalog as _Catalog

TARGET_SECONDS = 2.0
STEPS_PER_JOURNEY = 20
TEMPLATES = tuple(f"tmpl_{i}" for i in range(12))
EVENTS = frozenset(
    {"cart_abandoned", "order_completed", "signed_up", "product_viewed", "unsubscribed"}
)
MEDIUM_EVENTS = {
    "email": frozenset(
        {"email.delivered", "email.opened", "email.clicked", "email.bounced", "email.unsubscribed"}
    ),
    "site": frozenset({"site.viewed", "site.clicked", "site.dismissed"}),
    "audience": frozenset(),
}


def catalog() -> _Catalog:
    """A configuration like the default one: two owned channels and one paid."""
    return Catalog(
        channels={
            "email": ChannelInfo("email", "owned", "email"),
            "site": ChannelInfo("site", "owned", "site"),
            "retargeting": ChannelInfo("retargeting", "paid", "audience", needs_template=False),
        },
        templates=frozenset(TEMPLATES),
        events=EVENTS,
        medium_events=MEDIUM_EVENTS,
    )


def journey_text(n: int, rng: random.Random) -> str:
    """One valid 20-step journey; numbers, templates, durations and weights vary with n."""

    def t() -> str:
        return rng.choice(TEMPLATES)

    total = rng.randint(10, 200)
    days = rng.choice(["1d", "2d", "36h", "3d"])
    w = rng.randint(20, 60)
    country = rng.choice(["NL", "BE", "DE", "FR"])
    # every condition differs between journeys (numbers, names), so nothing a cache could
    # share makes the figure look better than a set of unrelated journeys would
    days_gone = rng.randint(30, 365)
    locale = rng.choice(["en", "de", "fr", "es"])
    tags = rng.randint(1, 9)
    recent = rng.randint(7, 60)
    entry = rng.choice(
        [
            f"  event: cart_abandoned\n  where: properties.total > {total}\n"
            "  key: properties.cart_id\n  reentry: always\n",
            "  event: signed_up\n  reentry: never\n",
            '  schedule: "0 9 * * mon"\n  timezone: Europe/Amsterdam\n'
            f"  condition: days_since('order_completed') > {days_gone}\n  reentry: after 30d\n",
        ]
    )
    return f"""\
journey: bench-{n:04d}
description: generated journey {n} for the load benchmark
entry:
{entry}goal:
  event: order_completed
  within: 14d
exit_on: [email.unsubscribed, unsubscribed]
segments:
  big_spenders: count('order_completed', within='365d', where="properties.total > {total}") > 2
steps:
  - id: by_country
    type: split
    branches:
      - when: traits.country == '{country}' and properties.total >= {total}
        next: email_a
    otherwise: email_b
  - id: email_a
    type: send
    channel: email
    template: {t()}
    variants:
      - when: traits.locale == '{locale}'
        template: {t()}
    next: wait_1
  - id: email_b
    type: send
    channel: email
    template: {t()}
  - id: wait_1
    type: wait
    for: [email.opened, email.clicked]
    match_message: true
    timeout: {days}
    on_reaction: engaged
    on_timeout: pause_1
  - id: pause_1
    type: delay
    duration: 1d
    until:
      window: "09:00-18:00"
      days: [mon, tue, wed, thu, fri]
  - id: site_1
    type: send
    channel: site
    template: {t()}
  - id: wait_2
    type: wait
    for: [site.clicked]
    match_message: true
    timeout: 3d
    on_reaction: engaged
    on_timeout: test
  - id: test
    type: experiment
    arms:
      - {{ name: discount, weight: {w}, next: email_c }}
      - {{ name: tips, weight: {100 - w - 10}, next: email_d }}
      - {{ name: control, weight: 10, next: holdout, control: true }}
  - id: email_c
    type: send
    channel: email
    template: {t()}
    next: wait_3
  - id: email_d
    type: send
    channel: email
    template: {t()}
    next: wait_3
  - id: holdout
    type: delay
    duration: 5d
    next: done
  - id: wait_3
    type: wait
    for:
      - email.clicked
      - event: email.opened
        where: properties.device != 'bot-{n}'
    timeout: 2d
    on_reaction: engaged
    on_timeout: by_value
  - id: by_value
    type: split
    branches:
      - when: segment('big_spenders') or len(traits.tags) > {tags}
        next: vip_email
      - when: days_since('email.opened') < {recent} and not traits.opted_out_ads
        next: retarget
    otherwise: done
  - id: vip_email
    type: send
    channel: email
    template: {t()}
  - id: wait_4
    type: wait
    for: [email.clicked]
    match_message: true
    timeout: 2d
    on_reaction: engaged
    on_timeout: retarget
  - id: retarget
    type: send
    channel: retargeting
  - id: in_audience
    type: delay
    duration: 7d
  - id: again
    type: split
    branches:
      - when: lower(traits.tier) in ['gold', 'silver', 'tier-{n}'] and exists(traits.email)
        next: site_1
    otherwise: done
  - id: engaged
    type: exit
    reason: engaged
  - id: done
    type: exit
    reason: no_conversion
"""


def generate(count: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"bench/journey-{n:04d}.yaml", journey_text(n, rng)) for n in range(count)]


def timed(fn: Callable[[], JourneySet]) -> tuple[float, float, JourneySet]:
    """Wall-clock and CPU seconds of ``fn``. CPU time tells a busy machine from slow code:
    when the two differ a lot, something else was using the cores."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu, result


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--journeys", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    sources = generate(args.journeys)
    cat = catalog()
    load_texts(sources[:5], cat)  # warm imports and caches that a daemon also has warm
    times: list[float] = []
    cpu_times: list[float] = []
    loaded: JourneySet | None = None
    for _ in range(args.repeat):
        loaded = None  # a daemon holds one set, not the previous one as well
        seconds, cpu, loaded = timed(lambda: load_texts(sources, cat))
        times.append(seconds)
        cpu_times.append(cpu)
    assert loaded is not None and len(loaded) == args.journeys
    steps = sum(len(v.steps) for v in loaded)
    assert steps == args.journeys * STEPS_PER_JOURNEY
    best, median = min(times), statistics.median(times)
    rows: list[dict[str, object]] = [
        {
            "case": f"{args.journeys} journeys x {STEPS_PER_JOURNEY} steps",
            "best_s": round(best, 3),
            "median_s": round(median, 3),
            "median_cpu_s": round(statistics.median(cpu_times), 3),
            "per_journey_ms": round(median / args.journeys * 1000, 3),
            "target_s": TARGET_SECONDS,
            "ok": median < TARGET_SECONDS,
        }
    ]
    emit(
        "journey_load",
        rows,
        {
            "what": "journeys.load_texts: parse, schema, validate, compile (one Machine each)",
            "journeys": args.journeys,
            "steps": steps,
            "repeat": args.repeat,
            "bytes": sum(len(t) for _, t in sources),
            "command": "python -m bench.journey_load",
            "load_average": _load_average(),
        },
    )
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())

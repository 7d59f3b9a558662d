"""Valid journeys: entry kinds, re-entry, keys, goals, experiments, steps and defaults, and
the example journeys shipped with parcours."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journeys import Journey, load_paths
from journeys.schema import DelayStep, ExperimentStep, SendStep, WaitStep, parse_window
from tests.journeys.helpers import CATALOG, EXAMPLES, MINIMAL, load, problems


def test_examples_load_against_a_catalog_like_the_default_config() -> None:
    import tomllib

    from journeys import Catalog, ChannelInfo

    config = tomllib.loads((EXAMPLES.parents[1] / "config" / "parcours.toml").read_text())
    channels = {
        name: ChannelInfo(name, c["kind"], c["medium"], needs_template=c["kind"] == "owned")
        for name, c in config["channels"].items()
    }
    templates = frozenset(p.stem for p in (EXAMPLES / "templates").glob("*.yaml"))
    catalog = Catalog(
        channels=channels,
        templates=templates,
        events=frozenset(config["events"]["known"]),
        medium_events=CATALOG.medium_events,
    )
    loaded = load_paths([EXAMPLES], catalog)
    assert {"cart-recovery", "welcome-series", "win-back"} <= set(loaded.journeys)
    for version in loaded:
        assert version.source.startswith(str(EXAMPLES))
        assert len(version.version) == 16


ENTRY = "journey: t\nentry:\n{entry}steps:\n  - id: done\n    type: exit\n"


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ("  event: cart_abandoned\n", "event"),
        ("  event: cart_abandoned\n  where: properties.total > 10\n", "event"),
        ("  condition: traits.vip == true\n", "condition"),
        ('  schedule: "0 9 * * mon"\n  condition: traits.vip == true\n', "schedule"),
        ('  schedule: "*/15 * * * *"\n', "schedule"),
        ("  manual: true\n", "manual"),
    ],
)
def test_entry_kinds(entry: str, kind: str) -> None:
    assert load(ENTRY.format(entry=entry)).definition.entry.kind == kind


@pytest.mark.parametrize(
    ("reentry", "after"),
    [
        ("never", None),
        ("always", None),
        ("after 30d", timedelta(days=30)),
        ("'after 1d12h'", timedelta(days=1, hours=12)),
        ("'  after 2w  '", timedelta(weeks=2)),
    ],
)
def test_reentry(reentry: str, after: timedelta | None) -> None:
    entry = load(ENTRY.format(entry=f"  manual: true\n  reentry: {reentry}\n")).definition.entry
    assert entry.reentry_after == after
    assert entry.reentry == reentry.strip("' ")


def test_reentry_defaults_to_never() -> None:
    entry = load(ENTRY.format(entry="  manual: true\n")).definition.entry
    assert (entry.reentry, entry.reentry_after) == ("never", None)


@pytest.mark.parametrize("key", ["properties.cart_id", "traits.account.id", "properties.a-b"])
def test_keys(key: str) -> None:
    text = ENTRY.format(entry=f"  event: cart_abandoned\n  key: {key}\n")
    assert load(text).definition.entry.key == key


@pytest.mark.parametrize("key", ["cart_id", "properties", "event.cart_id", "properties..x"])
def test_bad_keys(key: str) -> None:
    (p,) = problems(ENTRY.format(entry=f"  event: cart_abandoned\n  key: {key}\n"))
    assert (p.line, p.column) == (4, 8)
    assert "name an event property or trait" in p.message


def test_goal_within_and_exit_events() -> None:
    text = MINIMAL.replace(
        "steps:\n",
        "goal:\n  event: order_completed\n  within: 14d\n"
        "  where: properties.total > 0\nexit_on:\n  - email.unsubscribed\n"
        "  - event: signed_up\n    where: properties.source == 'ads'\nsteps:\n",
    )
    j = load(text).definition
    assert j.goal is not None and j.goal.within == timedelta(days=14)
    assert [m.event for m in j.exit_on] == ["email.unsubscribed", "signed_up"]
    assert j.exit_on[1].where == "properties.source == 'ads'"


def test_goal_event_may_be_an_exit_event_with_a_filter() -> None:
    text = MINIMAL.replace(
        "steps:\n",
        "goal:\n  event: order_completed\nexit_on:\n  - event: order_completed\n"
        "    where: properties.refunded == true\nsteps:\n",
    )
    assert load(text).definition.goal is not None


EXPERIMENT = """\
journey: t
entry:
  manual: true
steps:
  - id: test
    type: experiment
    arms:
{arms}
  - id: a
    type: exit
  - id: b
    type: exit
"""


def test_experiment_arms() -> None:
    arms = (
        "      - { name: a, weight: 45, next: a }\n"
        "      - { name: b, weight: 45.5, next: b }\n"
        "      - { name: holdout, weight: 9.5, next: b, control: true }"
    )
    step = load(EXPERIMENT.format(arms=arms)).step("test")
    assert isinstance(step, ExperimentStep)
    assert [(a.name, a.weight, a.control) for a in step.arms] == [
        ("a", 45, False),
        ("b", 45.5, False),
        ("holdout", 9.5, True),
    ]


@pytest.mark.parametrize(
    ("arms", "message", "line", "column"),
    [
        (
            "      - { name: a, weight: -1, next: a }\n      - { name: b, weight: 1, next: b }",
            "Input should be greater than 0",
            8,
            28,
        ),
        (
            "      - { name: a, weight: 1, next: a }\n      - { name: b, weight: 1, next: c }",
            "step 'test' goes to unknown step 'c'",
            9,
            37,
        ),
        (
            "      - { name: 'an arm', weight: 1, next: a }\n"
            "      - { name: b, weight: 1, next: b }",
            "invalid name 'an arm'",
            8,
            17,
        ),
        (
            "      - { name: a, weight: 1 }\n      - { name: b, weight: 1, next: b }",
            "missing required field 'next'",
            8,
            9,
        ),
        (
            "      - { name: a, weight: lots, next: a }\n      - { name: b, weight: 1, next: b }",
            "Input should be a valid number",
            8,
            28,
        ),
    ],
)
def test_experiment_arm_problems(arms: str, message: str, line: int, column: int) -> None:
    found = problems(EXPERIMENT.format(arms=arms))
    hit = [p for p in found if message in p.message]
    assert hit, found
    assert (hit[0].line, hit[0].column) == (line, column)


def test_send_and_delay_default_to_the_following_step() -> None:
    text = MINIMAL.replace(
        "  - id: wait\n", "  - id: pause\n    type: delay\n    duration: 1h\n  - id: wait\n"
    )
    v = load(text)
    assert v.target("mail", "advance") == "pause"
    assert v.target("pause", "advance") == "wait"


def test_wait_with_reaction_per_event() -> None:
    text = MINIMAL.replace("for: [email.opened]", "for: [email.opened, email.clicked]").replace(
        "    on_reaction: done\n",
        "    on_reaction:\n      email.opened: done\n      email.clicked: done\n",
    )
    v = load(text)
    assert v.target("wait", "react:email.opened") == "done"
    assert v.target("wait", "react:email.clicked") == "done"


def test_wait_for_with_where_filter() -> None:
    text = MINIMAL.replace(
        "for: [email.opened]",
        "for:\n      - event: email.clicked\n        where: properties.url != 'unsubscribe'",
    )
    step = load(text).step("wait")
    assert isinstance(step, WaitStep)
    assert step.for_[0].where == "properties.url != 'unsubscribe'"


def test_delay_until_a_window_on_weekdays() -> None:
    text = MINIMAL.replace(
        "  - id: wait\n",
        "  - id: pause\n    type: delay\n    until:\n      window: '09:00-17:30'\n"
        "      days: [mon, fri]\n  - id: wait\n",
    )
    step = load(text).step("pause")
    assert isinstance(step, DelayStep) and step.until is not None
    assert (step.until.window, step.until.days) == ("09:00-17:30", ["mon", "fri"])


def test_windows() -> None:
    from datetime import time

    assert parse_window("09:00-17:30") == (time(9), time(17, 30))
    assert parse_window("21:00-08:00") == (time(21), time(8))  # wraps past midnight
    assert parse_window("00:00-24:00")[1] == time(23, 59, 59)
    for bad in ("9-17", "25:00-26:00", "09:00", "09:60-10:00"):
        with pytest.raises(ValueError, match="invalid time window"):
            parse_window(bad)


def test_send_variants_and_labels() -> None:
    text = MINIMAL.replace(
        "    template: reminder\n",
        "    label: First reminder\n    template: reminder\n    variants:\n"
        "      - when: traits.locale == 'en'\n        template: offer\n",
    )
    step = load(text).step("mail")
    assert isinstance(step, SendStep)
    assert step.label == "First reminder"
    assert step.variants[0].template == "offer"


def test_quiet_hours_segments_and_transactional() -> None:
    text = MINIMAL.replace(
        "steps:\n",
        "quiet_hours:\n  window: '21:00-08:00'\n  default_timezone: Europe/Brussels\n"
        "transactional: true\nsegments:\n  big: count('order_completed') > 3\nsteps:\n",
    )
    j: Journey = load(text).definition
    assert j.quiet_hours is not None and j.quiet_hours.default_timezone == "Europe/Brussels"
    assert j.transactional is True
    assert j.segments == {"big": "count('order_completed') > 3"}


def test_journey_segments_and_shared_segments_are_usable() -> None:
    text = MINIMAL.replace(
        "steps:\n", "segments:\n  big: len(traits.orders) > 3\nsteps:\n"
    ).replace(
        "  - id: mail\n",
        "  - id: pick\n    type: split\n    branches:\n      - when: segment('big')\n"
        "        next: mail\n      - when: segment('vip')\n        next: mail\n"
        "    otherwise: mail\n  - id: mail\n",
    )
    v = load(text)
    assert v.condition(("steps", 0, "branches", 1, "when")).segments == {"vip"}


def test_yaml_merge_keys_share_settings() -> None:
    text = MINIMAL.replace(
        "  - id: wait\n",
        "  - &wait_defaults\n    id: wait\n",
    ).replace(
        "  - id: done\n",
        "  - <<: *wait_defaults\n    id: wait2\n    on_reaction: done\n  - id: done\n",
    )
    text = text.replace("on_timeout: done", "on_timeout: wait2", 1)
    v = load(text)
    step = v.step("wait2")
    assert isinstance(step, WaitStep)
    assert step.timeout == timedelta(days=2)


def test_yaml_tags_that_build_objects_are_refused() -> None:
    text = MINIMAL.replace("journey: t", "journey: !!python/object:os.system t")
    (p,) = problems(text)
    assert (p.line, p.column) == (1, 10)
    assert "bad value" in p.message


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    (p,) = problems("\n".join(lines) + "\n")
    assert "expands to more than" in p.message


@pytest.mark.parametrize(
    "pause",
    [
        "  - id: pause\n    type: delay\n    duration: 1d\n    next: mail\n",
        "  - id: pause\n    type: delay\n    duration: 1h\n    until: '09:00-17:00'\n"
        "    next: mail\n",
    ],
    ids=["duration", "duration-then-window"],
)
def test_loops_through_a_timed_delay_or_a_wait_are_fine(pause: str) -> None:
    text = MINIMAL.replace("on_timeout: done", "on_timeout: pause").replace(
        "  - id: done\n", pause + "  - id: done\n"
    )
    v = load(text)
    assert v.target("pause", "advance") == "mail"

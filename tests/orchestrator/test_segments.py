"""Named segments as a designer uses them: each condition form over traits and event
history, in entries, splits, variants and scheduled entries, and membership changes that
start (``segment.entered``) and end (``segment.exited``) journeys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.db import tables as t
from orchestrator.ingest import EventIn, record
from orchestrator.model import Customer
from tests.orchestrator.conftest import Harness, HarnessFactory, with_journeys

SEGMENTS = {
    # "country is NL"
    "nl": "traits.country == 'NL'",
    # a segment built on another one
    "vip": "traits.tier == 'gold' and segment('nl')",
    # "bought from category cat-litter in the last 90 days"
    "cat_buyers": "count('order_completed', within='90d', "
    "where=\"properties.category == 'cat-litter'\") > 0",
    # "opened no email in 30 days"
    "dormant": "count('email.opened', within='30d') == 0",
    # "last order more than 60 days ago"
    "lapsed": "days_since('order_completed') > 60",
}

EXTRA = {
    "vip-welcome.yaml": """
journey: vip-welcome
entry:
  event: segment.entered
  where: properties.segment == 'vip'
  reentry: always
exit_on:
  - event: segment.exited
    where: properties.segment == 'vip'
steps:
  - id: hello
    type: send
    channel: email
    template: welcome
  - id: linger
    type: delay
    duration: 30d
  - id: done
    type: exit
""",
    "cat-care.yaml": """
journey: cat-care
entry:
  event: segment.entered
  where: properties.segment == 'cat_buyers'
steps:
  - id: tips
    type: send
    channel: email
    template: welcome_tips
  - id: done
    type: exit
""",
    "greet.yaml": """
journey: greet
entry:
  event: product_viewed
  where: segment('nl')
  reentry: always
steps:
  - id: hello
    type: send
    channel: email
    template: welcome
    variants:
      - when: segment('cat_buyers')
        template: welcome_tips
  - id: done
    type: exit
""",
}


@pytest.fixture
def h(make_harness: HarnessFactory, tmp_path: Path) -> Harness:
    return make_harness(journeys=with_journeys(tmp_path, EXTRA), segments=SEGMENTS)


def past(h: Harness, user: str, name: str, days_ago: float, **props: Any) -> None:
    """An event that happened ``days_ago`` (a backfilled order history)."""
    at = h.clock.now() - timedelta(days=days_ago)
    body = {
        "userId": user,
        "event": name,
        "properties": props,
        "timestamp": at.isoformat(),
        "messageId": f"past-{user}-{name}-{days_ago}-{sorted(props.items())}",
    }
    with h.rt.db.begin() as conn:
        record(conn, [EventIn.model_validate(body)], h.clock.now())
    h.engine.run_until_idle()


def member(h: Harness, user: str, segment: str) -> bool:
    """Evaluate a named segment the way the engine does (database-backed history)."""
    with h.rt.db.connect() as conn:
        row = conn.execute(select(t.customers).where(t.customers.c.id == user)).one()
        scope = h.engine._scope(conn, Customer.from_row(row), {}, None)
        return h.engine.segments[segment](scope)


def test_trait_conditions_and_segments_of_segments(h: Harness) -> None:
    h.identify("ann", country="NL", tier="gold")
    h.identify("bea", country="BE", tier="gold")
    h.identify("cor", country="NL", tier="silver")
    assert [member(h, u, "nl") for u in ("ann", "bea", "cor")] == [True, False, True]
    assert [member(h, u, "vip") for u in ("ann", "bea", "cor")] == [True, False, False]


def test_count_within_a_window_filtered_on_properties(h: Harness) -> None:
    h.identify("ann", country="NL")
    past(h, "ann", "order_completed", 100, category="cat-litter")  # too long ago
    past(h, "ann", "order_completed", 10, category="dog-food")  # another category
    assert not member(h, "ann", "cat_buyers")
    past(h, "ann", "order_completed", 89, category="cat-litter")
    assert member(h, "ann", "cat_buyers")
    h.clock.advance(timedelta(days=2))  # the purchase ages out of the 90 days
    assert not member(h, "ann", "cat_buyers")


def test_no_email_opened_in_30_days_and_days_since(h: Harness) -> None:
    h.identify("ann", country="NL")
    assert member(h, "ann", "dormant")  # never opened anything
    assert not member(h, "ann", "lapsed")  # never ordered: days_since is null
    past(h, "ann", "email.opened", 40)
    past(h, "ann", "order_completed", 61, category="dog-food")
    assert member(h, "ann", "dormant") and member(h, "ann", "lapsed")
    past(h, "ann", "email.opened", 5)
    assert not member(h, "ann", "dormant")


def test_entering_a_segment_by_identify_starts_a_journey_and_leaving_it_ends_it(
    h: Harness,
) -> None:
    assert h.engine.segment_watch.active
    h.identify("ann", email="ann@example.nl", country="NL", tier="silver")
    assert h.enrollments("ann", "vip-welcome") == []
    h.identify("ann", tier="gold")  # now a VIP
    enr = h.one("ann", "vip-welcome")
    assert (enr.status, enr.state) == ("live", "linger")
    assert [d.template for d in h.deliveries("ann")] == ["welcome"]
    h.identify("ann", tier="gold", first_name="Ann")  # still VIP: nothing new
    assert len(h.enrollments("ann", "vip-welcome")) == 1
    h.identify("ann", country="BE")  # out of 'nl', so out of 'vip'
    enr = h.one("ann", "vip-welcome")
    assert (enr.status, enr.exit_reason) == ("ended", "segment.exited")
    with h.rt.db.connect() as conn:
        m = t.segment_memberships.c
        rows = conn.execute(select(m.segment).where(m.customer_id == "ann")).scalars().all()
        names = [
            (e.name, e.properties["segment"])
            for e in conn.execute(
                select(t.events).where(t.events.c.kind == "internal").order_by(t.events.c.id)
            )
        ]
    assert sorted(rows) == ["dormant"]  # still never opened an email
    assert names == [
        ("segment.entered", "dormant"),
        ("segment.entered", "nl"),
        ("segment.entered", "vip"),
        ("segment.exited", "nl"),
        ("segment.exited", "vip"),
    ]


def test_a_track_event_that_changes_a_history_segment_starts_a_journey(h: Harness) -> None:
    h.identify("ann", email="ann@example.nl", country="NL")
    h.event("ann", "order_completed", category="dog-food")
    assert h.enrollments("ann", "cat-care") == []
    h.event("ann", "order_completed", category="cat-litter")
    assert h.one("ann", "cat-care").exit_reason == "completed"
    assert [d.template for d in h.deliveries("ann")] == ["welcome_tips"]


def test_segments_in_entry_conditions_and_variants(h: Harness) -> None:
    h.identify("de", email="de@example.de", country="DE")
    h.identify("nl", email="nl@example.nl", country="NL")
    h.identify("cat", email="cat@example.nl", country="NL")
    past(h, "cat", "order_completed", 20, category="cat-litter")
    for user in ("de", "nl", "cat"):
        h.event(user, "product_viewed")
    assert h.enrollments("de", "greet") == []  # the entry's segment('nl') is false
    greet = {
        u: [d.template for d in h.deliveries(u) if d.journey == "greet"] for u in ("nl", "cat")
    }
    assert greet == {"nl": ["welcome"], "cat": ["welcome_tips"]}  # the variant's segment


def test_segments_in_a_scheduled_entry_and_a_split(h: Harness) -> None:
    # win-back: every Monday, customers whose last order is over 90 days old; cat owners
    # (cat litter within a year, a journey-file segment) get the cat offer.
    for user in ("cat", "gen", "recent"):
        h.identify(user, email=f"{user}@example.nl", country="NL")
    past(h, "cat", "order_completed", 120, category="cat-litter")
    past(h, "gen", "order_completed", 120, category="dog-food")
    past(h, "recent", "order_completed", 10, category="cat-litter")
    assert h.engine.enroll_scheduled("win-back", h.clock.now()) == 2
    offers = {
        u: [d.template for d in h.deliveries(u) if d.journey == "win-back"]
        for u in ("cat", "gen", "recent")
    }
    assert offers == {"cat": ["winback_cat"], "gen": ["winback_general"], "recent": []}


def test_no_segment_bookkeeping_when_no_journey_listens(make_harness: HarnessFactory) -> None:
    h = make_harness(segments=SEGMENTS)  # the examples only: none uses segment events
    assert not h.engine.segment_watch.active
    h.identify("ann", country="NL", tier="gold")
    assert h.count(t.segment_memberships) == 0


LAPSED_WINBACK = """
journey: lapsed-winback
entry:
  event: segment.entered
  where: properties.segment == 'lapsed'
steps:
  - id: miss_you
    type: send
    channel: email
    template: welcome
  - id: done
    type: exit
"""


def internal_events(h: Harness, user: str) -> list[tuple[str, str]]:
    with h.rt.db.connect() as conn:
        return [
            (e.name, e.properties["segment"])
            for e in conn.execute(
                select(t.events)
                .where(t.events.c.kind == "internal", t.events.c.customer_id == user)
                .order_by(t.events.c.id)
            )
        ]


def test_a_segment_that_changes_with_time_alone_is_announced_by_the_sweep(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    """'No order for 60 days' turns true on day 61 without any event; the sweep notices,
    and the journey waiting for it starts. Leaving by time ('cat_buyers' after 90 days)
    is announced too; a second sweep at the same moment announces nothing again."""
    files = {**EXTRA, "lapsed-winback.yaml": LAPSED_WINBACK}
    h = make_harness(journeys=with_journeys(tmp_path, files), segments=SEGMENTS)
    watch = h.engine.segment_watch
    assert {"cat_buyers", "dormant", "lapsed"} <= set(watch.timed)
    assert not {"nl", "vip"} & set(watch.timed)  # traits only: they change with events
    h.identify("ann", email="ann@example.nl", country="NL")
    past(h, "ann", "order_completed", 50, category="cat-litter")
    h.identify("bob", email="bob@example.nl", country="NL")
    assert h.engine.sweep_segments(h.clock.now()) == 0  # nothing changed since the events
    assert h.enrollments("ann", "lapsed-winback") == []

    h.clock.advance(timedelta(days=11))  # day 61 since ann's order; no event at all
    assert h.engine.sweep_segments(h.clock.now()) == 1
    assert h.engine.sweep_segments(h.clock.now()) == 0  # already announced
    h.engine.run_until_idle()
    enr = h.one("ann", "lapsed-winback")
    assert enr.exit_reason == "completed"
    assert [d.template for d in h.deliveries("ann")][-1] == "welcome"
    assert internal_events(h, "ann")[-1] == ("segment.entered", "lapsed")

    h.clock.advance(timedelta(days=30))  # the cat-litter order is now 91 days old
    assert h.engine.sweep_segments(h.clock.now()) == 1
    assert internal_events(h, "ann")[-1] == ("segment.exited", "cat_buyers")
    assert internal_events(h, "bob") == [("segment.entered", "dormant"), ("segment.entered", "nl")]


def test_the_sweep_leaves_erased_customers_alone_and_stops_when_asked(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    files = {**EXTRA, "lapsed-winback.yaml": LAPSED_WINBACK}
    h = make_harness(journeys=with_journeys(tmp_path, files), segments=SEGMENTS)
    for user in ("ann", "bob"):
        h.identify(user, email=f"{user}@example.nl")
        past(h, user, "order_completed", 50)
    assert h.engine.sweep_segments(h.clock.now()) == 0  # the baseline
    with h.rt.db.begin() as conn:
        conn.execute(
            t.customers.update().where(t.customers.c.id == "bob").values(erased_at=h.clock.now())
        )
    h.clock.advance(timedelta(days=11))
    assert h.engine.sweep_segments(h.clock.now(), stop=lambda: True) == 0  # shutting down
    assert h.engine.sweep_segments(h.clock.now(), page=1) == 1  # ann only
    assert internal_events(h, "bob")[-1:] != [("segment.entered", "lapsed")]


def test_no_sweep_when_no_journey_listens_for_segment_events(make_harness: HarnessFactory) -> None:
    h = make_harness(segments=SEGMENTS)  # the examples only: nobody uses segment.entered
    h.identify("ann", email="ann@example.nl")
    past(h, "ann", "order_completed", 50)
    h.clock.advance(timedelta(days=11))
    assert not h.engine.segment_watch.active
    assert h.engine.sweep_segments(h.clock.now()) == 0
    assert internal_events(h, "ann") == []


def test_the_daemon_sweeps_at_the_configured_interval(make_harness: HarnessFactory) -> None:
    from orchestrator.daemon import Workers, make_scheduler

    h = make_harness(segments=SEGMENTS, workers={"segment_sweep_interval": "15m"})
    job = make_scheduler(Workers(h.rt)).get_job("segments")
    assert job is not None and job.trigger.interval.total_seconds() == 900


def test_a_bad_sweep_interval_is_refused_with_the_reason() -> None:
    from orchestrator.config import ConfigError, load_settings
    from tests.conftest import CONFIG

    with pytest.raises(ConfigError, match="segment_sweep_interval"):
        load_settings(CONFIG, workers={"segment_sweep_interval": "soon"})


def test_the_first_sweep_records_the_existing_base_without_starting_anyone(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    """A journey on segment.entered 'lapsed' deployed today starts customers as they become
    lapsed, not everyone who already was; a changed condition is a new baseline."""
    journeys = with_journeys(tmp_path, {"lapsed-winback.yaml": LAPSED_WINBACK})
    segments = {"lapsed": "days_since('order_completed') > 60"}
    before = make_harness(segments=segments)  # no journey listens yet: nothing recorded
    past(before, "old", "order_completed", 100)  # lapsed long before the journey existed
    past(before, "new", "order_completed", 55)
    url = before.rt.settings.database_url
    h = make_harness(url=url, journeys=journeys, segments=segments)
    assert h.engine.sweep_segments(h.clock.now()) == 0  # the baseline: recorded, silent
    with h.rt.db.connect() as conn:
        m = t.segment_memberships.c
        members = conn.execute(select(m.customer_id).where(m.segment == "lapsed")).scalars()
        assert list(members) == ["old"]
    h.clock.advance(timedelta(days=6))  # 'new' becomes lapsed
    assert h.engine.sweep_segments(h.clock.now()) == 1
    h.engine.run_until_idle()
    assert h.enrollments("old", "lapsed-winback") == []
    assert len(h.enrollments("new", "lapsed-winback")) == 1

    # The designer changes the condition: the next sweep is a baseline again, so 'mid'
    # (lapsed under the new rule only) is recorded, not started.
    past(before, "mid", "order_completed", 45)
    wider = {"lapsed": "days_since('order_completed') > 30"}
    h2 = make_harness(url=url, journeys=journeys, segments=wider)
    assert h2.engine.sweep_segments(h2.clock.now()) == 0
    h2.engine.run_until_idle()
    assert h2.enrollments("mid", "lapsed-winback") == []
    assert h2.engine.sweep_segments(h2.clock.now()) == 0


@pytest.mark.parametrize("limit", [5000, 1], ids=["prefetched", "heavy-histories"])
def test_the_sweep_agrees_with_the_event_path_on_every_customer(
    make_harness: HarnessFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """The sweep evaluates a page of customers over history it reads in one query (or, for
    a customer with more events than the prefetch limit, per query); what it records must
    equal what the engine's per-customer history queries say, for random histories, at
    two moments."""
    import random

    from orchestrator import segments

    monkeypatch.setattr(segments, "PREFETCH_LIMIT", limit)

    files = {**EXTRA, "lapsed-winback.yaml": LAPSED_WINBACK}
    h = make_harness(journeys=with_journeys(tmp_path, files), segments=SEGMENTS)
    rng = random.Random(11)
    users = [f"r{i:02d}" for i in range(40)]
    for user in users:
        h.identify(user, email=f"{user}@example.nl", country=rng.choice(["NL", "BE"]))
        for k in range(rng.randrange(4)):
            name = rng.choice(["order_completed", "email.opened"])
            props = {"category": rng.choice(["cat-litter", "dog-food"])} if k % 2 else {}
            past(h, user, name, rng.uniform(1, 200), **props)
    timed = h.engine.segment_watch.timed

    def stored() -> set[tuple[str, str]]:
        with h.rt.db.connect() as conn:
            m = t.segment_memberships.c
            rows = conn.execute(select(m.customer_id, m.segment).where(m.segment.in_(timed)))
            return {(r.customer_id, r.segment) for r in rows}

    for days in (0, 40):
        h.clock.advance(timedelta(days=days))
        h.engine.sweep_segments(h.clock.now())
        expected = {(u, s) for u in users for s in timed if member(h, u, s)}
        assert stored() & {(u, s) for u in users for s in timed} == expected


def test_config_segments_defined_through_themselves_are_refused_at_start() -> None:
    from orchestrator.config import ConfigError
    from orchestrator.runtime import build_runtime
    from tests.conftest import settings_for

    settings = settings_for(
        "sqlite://", segments={"a": "segment('b')", "b": "traits.x == 1 or segment('a')"}
    )
    with pytest.raises(
        ConfigError, match=r"\[segments\] a: defined through itself \(a -> b -> a\)"
    ):
        build_runtime(settings, check_schema=False, channels={}, sync=False)

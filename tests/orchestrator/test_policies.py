"""Rules that span journeys, as a customer lives them: consent on every channel, frequency
caps across journeys (skip or defer), quiet hours in the customer's own timezone through
daylight-saving changes, and transactional messages that bypass caps but never consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.db import tables as t
from orchestrator.policies import Cap, Policies, consent_updates
from tests.orchestrator.conftest import Harness, HarnessFactory, with_journeys

EXTRA = {
    "order-confirmation.yaml": """
journey: order-confirmation
transactional: true
entry: {event: order_completed, reentry: always}
steps:
  - id: confirm
    type: send
    channel: email
    template: welcome
  - id: done
    type: exit
""",
    "tips.yaml": """
journey: tips
entry: {event: product_viewed, reentry: always}
steps:
  - id: tip
    type: send
    channel: email
    template: welcome_tips
    on_cap: defer
  - id: done
    type: exit
""",
}


@pytest.fixture
def journeys(tmp_path: Path) -> list[str]:
    return with_journeys(tmp_path, EXTRA)


def make(factory: HarnessFactory, journeys: list[str], **settings: Any) -> Harness:
    """A harness whose dispatcher applies the configured policies, as the daemon's does."""
    h = factory(journeys=journeys, **settings)
    h.dispatcher.policies = Policies.from_settings(h.rt.settings)
    return h


def statuses(h: Harness, user: str) -> list[tuple[str | None, str, str | None]]:
    return [(d.journey, d.status, d.last_error) for d in h.deliveries(user)]


def consent(h: Harness, user: str) -> dict[str, Any]:
    with h.rt.db.connect() as conn:
        row = conn.execute(select(t.customers).where(t.customers.c.id == user)).one()
    return {"consent": dict(row.consent), "traits": dict(row.traits)}


# -- consent -------------------------------------------------------------------------------
def test_identify_records_consent_with_source_and_time(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    h = make(make_harness, journeys)
    h.identify("ann", email="ann@example.nl", consent={"email": False})
    got = consent(h, "ann")
    at = h.clock.now().isoformat()
    assert got["consent"] == {"email": {"granted": False, "source": "identify", "at": at}}
    assert "consent" not in got["traits"]  # one truth: customers.consent
    h.clock.advance(timedelta(hours=1))
    h.identify("ann", consent={"email": {"granted": True, "source": "preference-centre"}})
    entry = consent(h, "ann")["consent"]["email"]
    assert entry["granted"] is True and entry["source"] == "preference-centre"
    assert entry["at"] == h.clock.now().isoformat()


def test_email_opt_out_is_skipped_and_the_journey_takes_the_no_reaction_path(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    h = make(make_harness, journeys)
    h.identify("ann", email="ann@example.nl", consent={"email": False})
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)
    h.dispatch()
    assert statuses(h, "ann") == [("cart-recovery", "skipped", "no consent for email")]
    assert h.channel("email").sent == []
    h.advance(days=2)  # no reaction can come: the wait times out into the banner
    assert h.one("ann").state == "wait_site"
    h.dispatch()
    assert [(d.channel, d.status) for d in h.deliveries("ann")] == [
        ("email", "skipped"),
        ("site", "sent"),
    ]


@pytest.mark.parametrize("channel", ["email", "site", "retargeting"])
def test_consent_is_honoured_on_every_channel(
    make_harness: HarnessFactory, journeys: list[str], channel: str
) -> None:
    h = make(make_harness, journeys)
    h.identify("ann", email="ann@example.nl", consent={channel: False})
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)
    h.advance(days=5, minutes=1)  # email, then banner, then the paid audience
    h.dispatch()
    got = {d.channel: (d.status, d.last_error) for d in h.deliveries("ann")}
    assert got[channel] == ("skipped", f"no consent for {channel}")
    assert all(s == "sent" for ch, (s, _) in got.items() if ch != channel)
    assert h.one("ann").state == "in_audience"  # the journey went on regardless


def test_opt_out_of_a_medium_covers_its_channels_and_opt_in_can_be_required() -> None:
    p = Policies(consent_required=frozenset({"retargeting"}))
    assert p.consent({"email": {"granted": False}}, "newsletter", "email").action == "skip"
    assert p.consent({"newsletter": True, "email": False}, "newsletter", "email").action == "send"
    assert p.consent({}, "retargeting", "audience").reason == "no consent for retargeting"
    assert p.consent({"retargeting": {"granted": True}}, "retargeting", "audience").action == (
        "send"
    )


def test_consent_trait_shapes() -> None:
    at = datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert consent_updates({"consent": {"email": True, "sms": "yes"}}, at) == {
        "email": {"granted": True, "source": "identify", "at": at.isoformat()}
    }
    assert consent_updates({"consent": "all"}, at) == {}


def test_transactional_bypasses_caps_but_never_consent(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    caps = [{"channel": "email", "limit": 0, "period": "24h"}]  # no marketing email at all
    h = make(make_harness, journeys, caps=caps)
    h.identify("ann", email="ann@example.nl")
    h.identify("bob", email="bob@example.nl", consent={"email": False})
    for user in ("ann", "bob"):
        h.event(user, "order_completed", order_id="o1")
    h.event("ann", "product_viewed")
    h.dispatch()
    ann = {d.journey: (d.status, d.last_error) for d in h.deliveries("ann")}
    assert ann["order-confirmation"] == ("sent", None)  # transactional: not capped
    assert ann["tips"] == ("skipped", "frequency cap email 0 per 24h")
    assert statuses(h, "bob") == [("order-confirmation", "skipped", "no consent for email")]


# -- frequency caps ------------------------------------------------------------------------
def test_cap_across_journeys_skips_the_send_and_the_customer_moves_on(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    h = make(make_harness, journeys, caps=[{"channel": "email", "limit": 1, "period": "6h"}])
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "signed_up")
    h.dispatch()  # welcome-series' first email: sent
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)
    h.dispatch()
    got = statuses(h, "ann")
    assert got == [
        ("welcome-series", "sent", None),
        ("cart-recovery", "skipped", "frequency cap email 1 per 6h"),
    ]
    assert h.one("ann").state == "wait_email"  # moved on; the wait will time out
    h.clock.advance(timedelta(hours=6, seconds=1))
    h.event("ann", "cart_abandoned", cart_id="c2", total=30)
    h.dispatch()
    assert statuses(h, "ann")[-1] == ("cart-recovery", "sent", None)  # window passed


def test_cap_defers_when_the_journey_says_so_without_using_an_attempt(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    h = make(make_harness, journeys, caps=[{"channel": "email", "limit": 2, "period": "24h"}])
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "signed_up")
    h.dispatch()
    first = h.clock.now()
    h.clock.advance(timedelta(hours=3))
    h.event("ann", "product_viewed")
    h.dispatch()  # the second email today: allowed
    h.clock.advance(timedelta(hours=3))
    h.event("ann", "product_viewed")
    h.dispatch()  # the third: deferred until the first leaves the 24 h window
    row = h.deliveries("ann")[-1]
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at == first + timedelta(hours=24)
    assert row.last_error == "deferred: frequency cap email 2 per 24h"
    h.clock.set(first + timedelta(hours=24))
    h.dispatch()
    row = h.deliveries("ann")[-1]
    assert (row.status, row.attempts) == ("sent", 1)


def test_several_caps_per_channel_and_medium() -> None:
    p = Policies(
        caps=(
            Cap("email", 2, timedelta(days=1)),
            Cap("email", 3, timedelta(days=7)),
        )
    )
    now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    week = [("news", "email", now - timedelta(days=d)) for d in (2, 3, 6)]
    assert p.cap(now, "news", "email", week, "skip").reason == "frequency cap email 3 per 7d"
    deferred = p.cap(now, "news", "email", week, "defer")
    assert deferred.until == now - timedelta(days=6) + timedelta(days=7)
    assert p.cap(now, "news", "email", week[1:], "skip").action == "send"
    assert p.cap(now, "site", "site", week, "skip").action == "send"  # other medium


# -- quiet hours ---------------------------------------------------------------------------
QUIET = {"window": "21:00-08:00", "default_timezone": "Europe/Amsterdam"}


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        # 22:30 UTC in winter: 23:30 in Amsterdam (quiet until 08:00 CET = 07:00 UTC) ...
        ("2026-01-14T22:30", "Europe/Amsterdam", "2026-01-15T07:00"),
        # ... 17:30 in New York: send now ...
        ("2026-01-14T22:30", "America/New_York", None),
        # ... 07:30 in Tokyo: quiet until 08:00 JST = 23:00 UTC.
        ("2026-01-14T22:30", "Asia/Tokyo", "2026-01-14T23:00"),
        # Amsterdam springs forward on 29 March 2026: 08:00 local is 07:00 UTC the day
        # before and 06:00 UTC that morning.
        ("2026-03-28T06:30", "Europe/Amsterdam", "2026-03-28T07:00"),
        ("2026-03-29T05:30", "Europe/Amsterdam", "2026-03-29T06:00"),
        # New York springs forward on 8 March 2026 (EST -> EDT): 08:00 is 12:00 UTC.
        ("2026-03-08T11:30", "America/New_York", "2026-03-08T12:00"),
        # Amsterdam falls back on 25 October 2026: 21:00 local is 19:00 UTC the evening
        # before and 20:00 UTC that evening.
        ("2026-10-24T19:30", "Europe/Amsterdam", "2026-10-25T07:00"),
        ("2026-10-25T19:30", "Europe/Amsterdam", None),
        # No timezone known: the configured default.
        ("2026-01-14T22:30", None, "2026-01-15T07:00"),
    ],
)
def test_quiet_hours_in_the_customers_timezone_across_dst(
    now: str, tz: str | None, expected: str | None
) -> None:
    p = Policies(quiet_window=QUIET["window"], default_timezone=QUIET["default_timezone"])
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    d = p.quiet(at, tz, None)
    if expected is None:
        assert d.action == "send"
    else:
        assert (d.action, d.until) == (
            "defer",
            datetime.fromisoformat(expected).replace(tzinfo=UTC),
        )


def test_a_journeys_own_quiet_hours_win_over_the_default() -> None:
    p = Policies(quiet_window="21:00-08:00")
    at = datetime(2026, 1, 14, 21, 30, tzinfo=UTC)  # 22:30 in Amsterdam
    own = {"window": "23:00-07:00", "timezone": "Europe/Amsterdam"}
    assert p.quiet(at, "Europe/Amsterdam", own).action == "send"
    assert p.quiet(at, "Europe/Amsterdam", None).action == "defer"


def test_default_quiet_hours_hold_marketing_but_not_transactional_sends(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    h = make(make_harness, journeys, quiet_hours=QUIET)
    h.clock.set(datetime(2026, 3, 29, 5, 30, tzinfo=UTC))  # 07:30 CEST, the DST morning
    h.identify("ams", email="a@example.nl", timezone="Europe/Amsterdam")
    h.identify("nyc", email="n@example.com", timezone="America/New_York")  # 01:30 EDT
    h.identify("tyo", email="t@example.jp", timezone="Asia/Tokyo")  # 14:30 JST
    for user in ("ams", "nyc", "tyo"):
        h.event(user, "signed_up")
    h.event("ams", "order_completed", order_id="o1")  # transactional confirmation
    h.dispatch()
    ams = {d.journey: d for d in h.deliveries("ams")}
    assert ams["order-confirmation"].status == "sent"
    welcome = ams["welcome-series"]
    assert (welcome.status, welcome.attempts) == ("pending", 0)
    assert welcome.next_attempt_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert welcome.last_error == "deferred: quiet hours 21:00-08:00"
    nyc = h.deliveries("nyc")[0]
    assert nyc.next_attempt_at == datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert h.deliveries("tyo")[0].status == "sent"
    h.clock.set(datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    h.dispatch()
    assert h.deliveries("ams")[0].status == "sent"
    assert h.deliveries("nyc")[0].status == "pending"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_cap_holds_when_two_replicas_claim_one_customers_messages_at_once(
    make_harness: HarnessFactory, journeys: list[str]
) -> None:
    """Two dispatchers (as two replicas) each claim one of ann's two emails at the same
    moment; the second must count the first's as sent, not see an empty history."""
    import threading

    from orchestrator.dispatcher import Dispatcher

    h = make(make_harness, journeys, caps=[{"channel": "email", "limit": 1, "period": "6h"}])
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "signed_up")  # welcome-series: an email
    h.event("ann", "cart_abandoned", cart_id="c1", total=30)  # cart-recovery: another
    rt = h.rt
    other = Dispatcher(
        rt.db,
        h.clock,
        rt.channels,
        rt.templates,
        rt.tracking,
        rt.settings.dispatch,
        policies=Policies.from_settings(rt.settings),
    )
    first_counting = threading.Event()
    original = Dispatcher._recent_sends

    def slow_first(self: Dispatcher, conn: Any, now: datetime, rows: Any) -> Any:
        out = original(self, conn, now, rows)
        if self is h.dispatcher:  # hold the first claim open while the second one runs
            first_counting.set()
            threading.Event().wait(0.5)
        return out

    got: dict[str, int] = {}

    def claim(name: str, d: Dispatcher) -> None:
        got[name] = len(d.claim(1)[0])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Dispatcher, "_recent_sends", slow_first)
        a = threading.Thread(target=claim, args=("first", h.dispatcher))
        a.start()
        assert first_counting.wait(10)
        b = threading.Thread(target=claim, args=("second", other))
        b.start()
        a.join(10)
        b.join(10)
    assert got == {"first": 1, "second": 0}
    rows = {(d.journey, d.status, d.last_error) for d in h.deliveries("ann")}
    assert rows == {
        ("welcome-series", "sending", None),
        ("cart-recovery", "skipped", "frequency cap email 1 per 6h"),
    }

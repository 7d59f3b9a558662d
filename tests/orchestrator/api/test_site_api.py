"""On-site messages: what the shop's page gets (live messages, newest first, with their
delivery key), impressions once per message and day, and a click that moves the customer
down the journey's reaction path."""

from __future__ import annotations

from datetime import timedelta

from starlette.testclient import TestClient

from orchestrator.api.state import ApiState
from orchestrator.clock import VirtualClock
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import (
    SITE,
    SITE_KEY,
    add_message,
    basic,
    dispatch,
    email_sent_to,
    enrollment,
    events_named,
    post_events,
    transitions,
)

ON_POSTGRES_TOO = True  # each test runs on SQLite and on PostgreSQL


def banner_shown(client: TestClient, runtime: Runtime, clock: VirtualClock) -> str:
    """Walk cart-recovery to the site banner; return its delivery key."""
    email_sent_to(client, runtime)
    clock.advance(timedelta(days=2, minutes=1))
    runtime.engine.run_until_idle()
    dispatch(runtime)
    assert enrollment(runtime).state == "wait_site"
    key = enrollment(runtime).last_delivery
    assert isinstance(key, str)
    return key


def test_a_click_on_the_banner_takes_the_reaction_path(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    key = banner_shown(client, runtime, clock)
    r = client.get("/v1/site/messages", params={"userId": "u1"}, headers=SITE)
    assert r.status_code == 200
    [message] = r.json()["messages"]
    assert message["delivery_key"] == key
    assert message["slot"] == "banner"
    assert "winkelmandje" in message["html"]
    r = client.post("/v1/site/click", json={"userId": "u1", "delivery_key": key}, headers=SITE)
    assert r.status_code == 200
    assert r.json() == {"recorded": True}
    [clicked] = events_named(runtime, "site.clicked")
    assert clicked.properties["delivery_key"] == key
    runtime.engine.run_until_idle()
    assert ("wait_site", "engaged", "react") in transitions(runtime)


def test_only_live_messages_newest_first(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    now = runtime.clock.now()
    add_message(runtime, "old", created_at=now - timedelta(hours=2))
    add_message(runtime, "new", created_at=now - timedelta(hours=1))
    add_message(runtime, "expired", expires_at=now - timedelta(seconds=1))
    add_message(runtime, "dismissed", dismissed_at=now)
    add_message(
        runtime,
        "future-expiry",
        expires_at=now + timedelta(days=1),
        created_at=now - timedelta(minutes=1),
    )
    add_message(runtime, "someone-else", customer="u2")
    add_message(runtime, "other-slot", slot="footer", created_at=now - timedelta(hours=3))
    r = client.get("/v1/site/messages?userId=u1", headers=SITE)
    keys = [m["delivery_key"] for m in r.json()["messages"]]
    assert keys == ["future-expiry", "new", "old", "other-slot"]
    only = client.get("/v1/site/messages?userId=u1&slot=footer", headers=SITE).json()
    assert [m["delivery_key"] for m in only["messages"]] == ["other-slot"]
    clock.advance(timedelta(days=2))
    r = client.get("/v1/site/messages?userId=u1", headers=SITE)
    assert [m["delivery_key"] for m in r.json()["messages"]] == ["new", "old", "other-slot"]


def flush_impressions(client: TestClient) -> None:
    """Write the impressions the API buffered (it does so on its own every 0.2 s)."""
    state: ApiState = client.app.state.parcours  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(state.pending_impressions.flush)


def test_impressions_are_recorded_once_per_message_and_day(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    add_message(runtime, "k1")
    add_message(runtime, "k2")
    for _ in range(3):
        client.get("/v1/site/messages?userId=u1", headers=SITE)
    flush_impressions(client)
    viewed = events_named(runtime, "site.viewed")
    assert sorted(e.properties["delivery_key"] for e in viewed) == ["k1", "k2"]
    assert {e.customer_id for e in viewed} == {"u1"}
    clock.advance(timedelta(days=1))
    client.get("/v1/site/messages?userId=u1", headers=SITE)
    flush_impressions(client)
    assert len(events_named(runtime, "site.viewed")) == 4


def test_an_anonymous_visitor_sees_the_messages_of_the_customer_it_was_linked_to(
    client: TestClient, runtime: Runtime
) -> None:
    post_events(
        client,
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "dev-1",
            "messageId": "i1",
            "traits": {},
        },
    )
    add_message(runtime, "k1")
    r = client.get("/v1/site/messages?anonymousId=dev-1", headers=SITE)
    assert r.json()["customer_id"] == "u1"
    assert [m["delivery_key"] for m in r.json()["messages"]] == ["k1"]
    nobody = client.get("/v1/site/messages?anonymousId=dev-2", headers=SITE).json()
    assert nobody == {"customer_id": "anon:dev-2", "messages": []}


def test_the_site_key_is_required(client: TestClient) -> None:
    assert client.get("/v1/site/messages?userId=u1").status_code == 401
    assert (
        client.get(
            "/v1/site/messages?userId=u1", headers={"X-Site-Key": "test-write-key"}
        ).status_code
        == 401
    )
    assert client.get("/v1/site/messages?userId=u1", headers=basic(SITE_KEY)).status_code == 200
    r = client.post("/v1/site/click", json={"userId": "u1", "delivery_key": "k"})
    assert r.status_code == 401


def test_bad_site_requests_are_400_or_404(client: TestClient, runtime: Runtime) -> None:
    assert client.get("/v1/site/messages", headers=SITE).json()["field"] == "userId"
    r = client.get("/v1/site/messages", params={"userId": "u" * 300}, headers=SITE)
    assert r.status_code == 400
    r = client.post("/v1/site/click", json={"userId": "u1"}, headers=SITE)
    assert (r.status_code, r.json()["field"]) == (400, "delivery_key")
    add_message(runtime, "k-u2", customer="u2")
    r = client.post("/v1/site/click", json={"userId": "u1", "delivery_key": "k-u2"}, headers=SITE)
    assert r.status_code == 404
    assert events_named(runtime, "site.clicked") == []


def test_dismissing_hides_the_message(client: TestClient, runtime: Runtime) -> None:
    add_message(runtime, "k1")
    r = client.post("/v1/site/dismiss", json={"userId": "u1", "delivery_key": "k1"}, headers=SITE)
    assert r.json() == {"recorded": True}
    assert client.get("/v1/site/messages?userId=u1", headers=SITE).json()["messages"] == []
    assert len(events_named(runtime, "site.dismissed")) == 1


def test_cors_is_open_for_the_site_but_not_for_admin(client: TestClient) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-Site-Key",
    }
    r = client.options("/v1/site/messages", headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    r = client.get(
        "/v1/site/messages?userId=u1", headers={**SITE, "Origin": "https://shop.example"}
    )
    assert r.headers["access-control-allow-origin"] == "*"
    r = client.options("/v1/admin/journeys", headers=preflight)
    assert "access-control-allow-origin" not in r.headers

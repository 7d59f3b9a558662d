"""Admin endpoints: journeys and live counts, pause/resume, timeline, enroll/exit, and GDPR
export and erasure - erasure ends enrollments, takes the customer out of paid audiences
before forgetting them, and leaves no personal data in any table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, select
from starlette.testclient import TestClient

from channels.base import Recipient, RetryableError
from channels.log import LogChannel
from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import (
    ADMIN,
    ADMIN_KEY,
    SITE,
    basic,
    cart_abandoned,
    dispatch,
    email_sent_to,
    enrollment,
    path_of,
    post_events,
    rows,
    tracking_urls,
)

ON_POSTGRES_TOO = True  # each test runs on SQLite and on PostgreSQL


def test_admin_key_as_bearer_or_basic_user(client: TestClient) -> None:
    assert client.get("/v1/admin/journeys").status_code == 401
    assert client.get("/v1/admin/journeys", headers=basic("test-write-key")).status_code == 401
    assert (
        client.get("/v1/admin/journeys", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert client.get("/v1/admin/journeys", headers=ADMIN).status_code == 200
    assert client.get("/v1/admin/journeys", headers=basic(ADMIN_KEY)).status_code == 200
    r = client.delete("/v1/admin/customers/u1")
    assert r.status_code == 401


def test_journeys_show_versions_status_and_live_counts_per_step(
    client: TestClient, runtime: Runtime
) -> None:
    email_sent_to(client, runtime, "u1")
    email_sent_to(client, runtime, "u2")
    journeys = {j["name"]: j for j in client.get("/v1/admin/journeys", headers=ADMIN).json()}
    assert set(journeys) == set(runtime.registry.current)
    cart = journeys["cart-recovery"]
    assert cart["status"] == "active"
    assert cart["live"] == 2
    assert cart["steps"]["wait_email"] == 2
    assert cart["steps"]["site_banner"] == 0
    [version] = cart["versions"]
    assert version == {
        "version": cart["current_version"],
        "created_at": version["created_at"],
        "current": True,
        "live": 2,
    }


def test_pause_and_resume_update_the_status_and_the_registry(
    client: TestClient, runtime: Runtime
) -> None:
    r = client.post("/v1/admin/journeys/cart-recovery/pause", headers=ADMIN)
    assert r.json() == {"name": "cart-recovery", "status": "paused"}
    assert runtime.registry.paused == frozenset({"cart-recovery"})
    [row] = rows(runtime, t.journeys, t.journeys.c.name == "cart-recovery")
    assert row.status == "paused"
    r = client.post(
        "/v1/admin/enroll", json={"journey": "cart-recovery", "userId": "u1"}, headers=ADMIN
    )
    assert r.status_code == 409
    client.post("/v1/admin/journeys/cart-recovery/resume", headers=ADMIN)
    assert runtime.registry.paused == frozenset()
    assert client.post("/v1/admin/journeys/nope/pause", headers=ADMIN).status_code == 404


def test_enroll_by_hand_then_exit(client: TestClient, runtime: Runtime) -> None:
    body = {
        "journey": "cart-recovery",
        "userId": "u9",
        "key": "cart-7",
        "properties": {"cart_id": "cart-7", "total": 12},
        "messageId": "op-1",
    }
    r = client.post("/v1/admin/enroll", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    eid = r.json()["enrollment_id"]
    row = enrollment(runtime, "u9")
    assert (row.id, row.key, row.state) == (eid, "cart-7", "wait_email")
    again = client.post("/v1/admin/enroll", json=body, headers=ADMIN)  # a retry: the same
    assert (again.status_code, again.json()["enrollment_id"]) == (201, eid)
    other = client.post("/v1/admin/enroll", json={**body, "messageId": "op-2"}, headers=ADMIN)
    assert other.status_code == 409  # a new request: the cart's enrollment is live
    r = client.post(f"/v1/admin/enrollments/{eid}/exit", json={"reason": "support"}, headers=ADMIN)
    assert r.json() == {"enrollment_id": eid, "reason": "support"}
    row = enrollment(runtime, "u9")
    assert (row.status, row.exit_reason) == ("ended", "support")
    # A late retry of the first request, after the enrollment ended (cart-recovery
    # re-enters always): still that enrollment, not a second one.
    late = client.post("/v1/admin/enroll", json=body, headers=ADMIN)
    assert (late.status_code, late.json()["enrollment_id"]) == (201, eid)
    assert enrollment(runtime, "u9").id == eid
    assert client.post(f"/v1/admin/enrollments/{eid}/exit", headers=ADMIN).status_code == 409
    assert client.post("/v1/admin/enrollments/nope/exit", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"journey": "nope", "userId": "u1"}, 404, "journey"),
        ({"journey": "cart-recovery"}, 400, "userId"),
        ({"journey": "cart-recovery", "userId": "u1", "properties": []}, 400, "properties"),
        ([], 400, "body"),
    ],
)
def test_bad_enrollments(client: TestClient, body: Any, status: int, field: str) -> None:
    r = client.post("/v1/admin/enroll", json=body, headers=ADMIN)
    assert (r.status_code, r.json()["field"]) == (status, field)


def test_a_customer_timeline_has_events_transitions_and_deliveries(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    [link] = tracking_urls(email, "t/c")
    client.get(path_of(link), follow_redirects=False)
    runtime.engine.run_until_idle()
    r = client.get("/v1/admin/customers/u1", headers=ADMIN)
    assert r.status_code == 200
    data = r.json()
    assert data["customer"]["email"] == "u1@example.com"
    assert [e["state"] for e in data["enrollments"]] == ["engaged"]
    kinds = {
        (
            e["kind"],
            e["detail"].get("name") or e["detail"].get("to_state") or e["detail"].get("channel"),
        )
        for e in data["timeline"]
    }
    assert {
        ("event", "cart_abandoned"),
        ("event", "email.clicked"),
        ("transition", "wait_email"),
        ("transition", "engaged"),
        ("delivery", "email"),
    } <= kinds
    times = [e["at"] for e in data["timeline"]]
    assert times == sorted(times, reverse=True)
    assert client.get("/v1/admin/customers/nobody", headers=ADMIN).status_code == 404
    assert client.get("/v1/admin/customers/u1?limit=0", headers=ADMIN).status_code == 400


class RecordingAudience(LogChannel):
    """A paid audience that remembers who it was asked to add and remove."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "paid", "audience")
        self.added: list[Recipient] = []
        self.removed: list[Recipient] = []
        self.fail: Exception | None = None

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self.added.extend(recipients)

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.removed.extend(recipients)


EMAIL, FIRST, LAST, PHONE = "anna.jansen@example.com", "Annabel", "Jansenius", "+31612345678"


def in_the_audience(client: TestClient, runtime: Runtime, clock: VirtualClock) -> RecordingAudience:
    """A customer with personal data everywhere, walked into the paid audience."""
    audience = RecordingAudience("retargeting")
    runtime.channels["retargeting"] = audience
    post_events(  # browsing anonymously first: kept as the profile "anon:dev-0"
        client,
        {
            "type": "track",
            "anonymousId": "dev-0",
            "messageId": "a0",
            "event": "product_viewed",
            "properties": {"note": f"for {FIRST}"},
        },
    )
    runtime.engine.run_until_idle()
    post_events(
        client,
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "dev-0",
            "messageId": "i0",
            "traits": {},
        },
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "dev-1",
            "messageId": "i1",
            "traits": {"email": EMAIL, "phone": PHONE, "first_name": FIRST, "last_name": LAST},
            "context": {"ip": "203.0.113.9", "traits": {"name": f"{FIRST} {LAST}"}},
        },
        {
            "type": "page",
            "anonymousId": "dev-2",
            "messageId": "p0",
            "name": "Home",
            "properties": {"search": f"gift for {FIRST}"},
        },
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "dev-2",
            "messageId": "i2",
            "traits": {},
        },
        {
            "type": "track",
            **cart_abandoned("u1"),
            "properties": {
                "cart_id": "c1",
                "total": 10,
                "ship_to": f"{FIRST} {LAST}",
                "phone": PHONE,
            },
        },
    )
    runtime.engine.run_until_idle()
    dispatch(runtime)
    clock.advance(timedelta(days=2, minutes=1))
    runtime.engine.run_until_idle()
    dispatch(runtime)
    client.get("/v1/site/messages?userId=u1", headers=SITE)
    clock.advance(timedelta(days=3, minutes=1))
    runtime.engine.run_until_idle()
    dispatch(runtime)
    assert enrollment(runtime).state == "in_audience"
    assert [r.email for r in audience.added] == [EMAIL]
    return audience


def personal_data_left(runtime: Runtime) -> list[str]:
    found = []
    with runtime.db.connect() as conn:
        for table in t.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                text_ = json.dumps([str(v) for v in row], ensure_ascii=False)
                for needle in (EMAIL, FIRST, LAST, PHONE, "203.0.113.9", "dev-0", "dev-1", "dev-2"):
                    if needle in text_:
                        found.append(f"{table.name}: {needle} in {text_[:200]}")
        names = inspect(conn).get_table_names()
    assert set(t.metadata.tables) <= set(names)
    return found


def test_export_has_everything_held(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    in_the_audience(client, runtime, clock)
    r = client.get("/v1/admin/customers/u1/export", headers=ADMIN)
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    data = r.json()
    assert data["customers"][0]["email"] == EMAIL
    assert {a["anonymous_id"] for a in data["anonymous_ids"]} == {"dev-0", "dev-1", "dev-2"}
    assert {e["message_id"] for e in data["events"]} >= {"a0", "i1", "i2", "p0", "m-u1-c1"}
    assert {c["id"] for c in data["customers"]} == {"u1", "anon:dev-0"}
    assert len(data["deliveries"]) == 3
    assert len(data["site_messages"]) == 1
    assert data["audience_memberships"][0]["channel"] == "retargeting"
    assert client.get("/v1/admin/customers/nobody/export", headers=ADMIN).status_code == 404


def test_erasure_removes_from_audiences_then_leaves_no_personal_data(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    audience = in_the_audience(client, runtime, clock)
    assert personal_data_left(runtime)  # the scan does find it before erasure
    with runtime.db.begin() as conn:  # a segment profile, as the segment watch keeps one
        conn.execute(
            t.segment_memberships.insert().values(
                customer_id="u1", segment="vip", entered_at=clock.now()
            )
        )
    r = client.delete("/v1/admin/customers/u1", headers=ADMIN)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["enrollments_ended"] == 1
    assert [(x["channel"], x["status"]) for x in result["audience_removals"]] == [
        ("retargeting", "sent")
    ]
    assert [x.email for x in audience.removed] == [EMAIL]
    assert personal_data_left(runtime) == []
    assert rows(runtime, t.segment_memberships) == []  # no profile left either
    row = enrollment(runtime)
    assert (row.status, row.exit_reason) == ("ended", "erased")
    [customer] = rows(runtime, t.customers, t.customers.c.id == "u1")
    assert customer.erased_at is not None
    removal = rows(runtime, t.deliveries, t.deliveries.c.operation == "audience_remove")
    assert [d.status for d in removal] == ["sent"]
    # anonymous counts remain
    assert len(rows(runtime, t.events)) >= 4
    assert len(rows(runtime, t.history)) >= 5
    assert client.get("/v1/site/messages?userId=u1", headers=SITE).json()["messages"] == []
    dispatch(runtime)  # nothing left to send for them
    assert len(audience.removed) == 1
    again = client.delete("/v1/admin/customers/u1", headers=ADMIN)
    assert again.status_code == 200 and again.json()["enrollments_ended"] == 0


def test_erasure_waits_when_an_audience_removal_must_be_retried(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    audience = in_the_audience(client, runtime, clock)
    audience.fail = RetryableError("platform down", retry_after=120)
    r = client.delete("/v1/admin/customers/u1", headers=ADMIN)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "120"
    [customer] = rows(runtime, t.customers, t.customers.c.id == "u1")
    assert customer.email == EMAIL and customer.erased_at is None
    audience.fail = None
    assert client.delete("/v1/admin/customers/u1", headers=ADMIN).status_code == 200
    assert [x.email for x in audience.removed] == [EMAIL]
    assert personal_data_left(runtime) == []


def test_unprocessed_events_of_an_erased_customer_never_enroll(
    client: TestClient, runtime: Runtime
) -> None:
    post_events(
        client, {"type": "identify", "userId": "u1", "messageId": "i", "traits": {"email": EMAIL}}
    )
    runtime.engine.run_until_idle()
    post_events(client, {"type": "track", **cart_abandoned("u1")})
    assert client.delete("/v1/admin/customers/u1", headers=ADMIN).status_code == 200
    runtime.engine.run_until_idle()
    assert rows(runtime, t.enrollments) == []
    assert client.delete("/v1/admin/customers/nobody", headers=ADMIN).status_code == 404


def test_reactions_of_an_erased_customer_are_not_recorded(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    client.delete("/v1/admin/customers/u1", headers=ADMIN)
    [link] = tracking_urls(email, "t/c")
    r = client.get(path_of(link), follow_redirects=False)
    assert r.status_code == 302  # they still get where they wanted to go
    clicked = rows(runtime, t.events, t.events.c.name == "email.clicked")
    assert clicked == []

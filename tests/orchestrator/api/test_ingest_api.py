"""Segment-spec ingest through the real ASGI app: what a sender can rely on (durable,
deduplicated, all-or-nothing, 400 naming the field, 401, 413) and that nothing it sends
can produce a 500."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import WRITE, basic, cart_abandoned, identify, rows

ON_POSTGRES_TOO = True  # each test runs on SQLite and on PostgreSQL


def count_events(runtime: Runtime) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.events)).scalar_one())


def test_track_is_durable_before_the_200_and_answers_like_segment(
    client: TestClient, runtime: Runtime
) -> None:
    r = client.post("/v1/track", json=cart_abandoned("u1"), headers=WRITE)
    assert r.status_code == 200
    assert r.json() == {"success": True}
    [event] = rows(runtime, t.events)
    assert (event.kind, event.name, event.customer_id) == ("track", "cart_abandoned", "u1")
    assert event.message_id == "m-u1-c1"
    assert event.properties["cart_id"] == "c1"


def test_identify_page_and_screen_are_recorded_with_their_kinds(
    client: TestClient, runtime: Runtime
) -> None:
    r = client.post("/v1/identify", json=identify("u1", email="a@b.nl"), headers=WRITE)
    assert r.is_success
    page = {"userId": "u1", "name": "Home", "messageId": "p1", "properties": {"path": "/"}}
    assert client.post("/v1/page", json=page, headers=WRITE).is_success
    screen = {"userId": "u1", "name": "Cart", "messageId": "s1"}
    assert client.post("/v1/screen", json=screen, headers=WRITE).is_success
    got = {r.message_id: r for r in rows(runtime, t.events)}
    assert got["id-u1"].kind == "identify" and got["id-u1"].traits == {"email": "a@b.nl"}
    assert (got["p1"].kind, got["p1"].name, got["p1"].properties["name"]) == (
        "page",
        "page_viewed",
        "Home",
    )
    assert got["s1"].name == "screen_viewed"


def test_identify_traits_are_merged_by_the_engine(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/identify", json=identify("u1", email="a@b.nl", plan="free"), headers=WRITE)
    second = {"userId": "u1", "messageId": "id-2", "traits": {"plan": "pro", "locale": "en"}}
    client.post("/v1/identify", json=second, headers=WRITE)
    runtime.engine.run_until_idle()
    [customer] = rows(runtime, t.customers)
    assert customer.email == "a@b.nl"
    assert customer.traits == {"email": "a@b.nl", "plan": "pro", "locale": "en"}


def test_message_id_deduplicates_retries(client: TestClient, runtime: Runtime) -> None:
    for _ in range(3):
        assert client.post("/v1/track", json=cart_abandoned("u1"), headers=WRITE).json() == {
            "success": True
        }
    assert count_events(runtime) == 1


def test_an_anonymous_id_later_identified_is_linked(client: TestClient, runtime: Runtime) -> None:
    anon = {"anonymousId": "dev-9", "event": "product_viewed", "messageId": "a1"}
    client.post("/v1/track", json=anon, headers=WRITE)
    client.post(
        "/v1/identify",
        json={"userId": "u7", "anonymousId": "dev-9", "messageId": "i1", "traits": {}},
        headers=WRITE,
    )
    client.post("/v1/track", json={**anon, "messageId": "a2"}, headers=WRITE)
    by_id = {r.message_id: r.customer_id for r in rows(runtime, t.events)}
    assert by_id == {"a1": "anon:dev-9", "i1": "u7", "a2": "u7"}
    [link] = rows(runtime, t.anonymous_ids)
    assert (link.anonymous_id, link.customer_id) == ("dev-9", "u7")


def test_batch_writes_every_call_and_applies_the_batch_context(
    client: TestClient, runtime: Runtime
) -> None:
    body = {
        "batch": [
            {"type": "identify", **identify("u1", email="a@b.nl")},
            {"type": "track", **cart_abandoned("u1"), "context": {"ip": "x"}},
            {"type": "page", "userId": "u1", "messageId": "p1", "name": "Cart"},
            {"type": "group", "userId": "u1", "groupId": "g1", "messageId": "g1"},
            {"type": "alias", "userId": "u1", "previousId": "old", "messageId": "al1"},
        ],
        "context": {"library": {"name": "test"}},
    }
    assert client.post("/v1/batch", json=body, headers=WRITE).json() == {"success": True}
    got = {r.message_id: r for r in rows(runtime, t.events)}
    assert set(got) == {"id-u1", "m-u1-c1", "p1"}  # group and alias are accepted, ignored
    assert got["m-u1-c1"].context == {"library": {"name": "test"}, "ip": "x"}


def test_a_bad_item_rejects_the_whole_batch_naming_the_field(
    client: TestClient, runtime: Runtime
) -> None:
    body = {
        "batch": [
            cart_abandoned("u1") | {"type": "track"},
            {"type": "track", "event": "x", "messageId": "n"},
        ]
    }
    r = client.post("/v1/batch", json=body, headers=WRITE)
    assert r.status_code == 400
    assert r.json()["field"] == "batch[1].userId"
    assert r.json()["code"] == "invalid_request"
    assert count_events(runtime) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": "u1"}, "event"),
        ({"userId": True, "event": "x"}, "userId"),
        ({"userId": "u", "event": "x", "properties": [1]}, "properties"),
        ({"userId": "u" * 300, "event": "x"}, "userId"),
        ({"userId": "u", "event": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"userId": "u", "event": "x", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp"),
        ({"userId": "u", "event": "x", "timestamp": 10**18}, "timestamp"),
        ([{"userId": "u", "event": "x"}], "body"),
        ("text", "body"),
    ],
)
def test_bad_track_calls_get_400_with_the_field(
    client: TestClient, runtime: Runtime, body: Any, field: str
) -> None:
    r = client.post("/v1/track", json=body, headers=WRITE)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert count_events(runtime) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batch": {"type": "track"}}, "batch"),
        ({"batch": [1]}, "batch[0]"),
        ({"batch": [{"event": "x", "userId": "u"}]}, "batch[0].type"),
        ({"batch": [{"type": "launch", "userId": "u"}]}, "batch[0].type"),
        ({}, "batch"),
    ],
)
def test_bad_batches_get_400(client: TestClient, body: Any, field: str) -> None:
    r = client.post("/v1/batch", json=body, headers=WRITE)
    assert r.status_code == 400
    assert r.json()["field"] == field


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"userId": "u", "event": "x"',
        b"\xff\xfe\x00garbage",
        b'{"userId": "u\xff", "event": "x"}',
        b'{"userId": "u", "event": "x", "properties": {"n": NaN}}',
        b'{"userId": "u", "event": "x", "properties": {"n": Infinity}}',
        b'{"userId": "u", "event": "x", "properties": {"n": ' + b"9" * 5000 + b"}}",
        b'{"userId": "u\\u0000", "event": "x"}',
        b'{"userId": "u", "event": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"userId": "u", "event": "x", "properties": ' + b'{"a":' * 100 + b"1" + b"}" * 101,
        b"",
        b"null",
        b"12345678901234567890",
    ],
)
def test_malformed_bodies_get_400_never_500(
    client: TestClient, runtime: Runtime, raw: bytes
) -> None:
    r = client.post("/v1/track", content=raw, headers={**WRITE, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False
    assert count_events(runtime) == 0


def test_large_numbers_are_stored_up_to_64_bits(client: TestClient, runtime: Runtime) -> None:
    body = cart_abandoned("u1") | {"properties": {"big": 2**63 - 1, "tiny": 1e-300, "f": 1e308}}
    assert client.post("/v1/track", json=body, headers=WRITE).status_code == 200
    [event] = rows(runtime, t.events)
    assert event.properties["big"] == 2**63 - 1
    for huge in (2**63, -(2**63) - 1, 10**40):
        body = cart_abandoned("u2") | {"properties": {"n": [huge]}}
        r = client.post("/v1/track", json=body, headers=WRITE)
        assert r.status_code == 400
        assert "64 bits" in r.json()["message"]


def test_write_key_is_the_basic_user_name(client: TestClient) -> None:
    body = cart_abandoned("u1")
    assert client.post("/v1/track", json=body, headers=basic("second-write-key")).is_success
    with_password = basic("test-write-key")  # a password is ignored, as Segment does
    assert client.post("/v1/track", json=body, headers=with_password).is_success


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("wrong-key"),
        basic(""),
        {"Authorization": "Bearer test-write-key"},
        {"Authorization": "Basic !!!not-base64"},
        basic("test-site-key"),  # another kind of key is not a write key
    ],
)
def test_unknown_or_missing_write_key_is_401_and_stores_nothing(
    client: TestClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    r = client.post(
        "/v1/batch", json={"batch": [{"type": "track", **cart_abandoned("u")}]}, headers=headers
    )
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert count_events(runtime) == 0


def test_write_key_in_the_body_like_analytics_js(client: TestClient, runtime: Runtime) -> None:
    body = cart_abandoned("u1") | {"writeKey": "test-write-key"}
    r = client.post("/v1/track", content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    bad = client.post("/v1/track", json=body | {"writeKey": "nope"})
    assert bad.status_code == 401
    assert count_events(runtime) == 1


def test_body_over_the_limit_is_413_by_content_length(client: TestClient, runtime: Runtime) -> None:
    big = cart_abandoned("u1") | {"properties": {"pad": "x" * 70_000}}
    r = client.post("/v1/track", json=big, headers=WRITE)
    assert r.status_code == 413
    assert count_events(runtime) == 0


def test_body_over_the_limit_is_413_when_streamed_without_length(
    client: TestClient, runtime: Runtime
) -> None:
    def chunks() -> Any:
        yield b'{"userId": "u", "event": "x", "properties": {"pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}}'

    r = client.post("/v1/track", content=chunks(), headers=WRITE)
    assert r.status_code == 413
    assert count_events(runtime) == 0


def test_gzip_bodies_are_inflated(client: TestClient, runtime: Runtime) -> None:
    body = {"batch": [{"type": "track", **cart_abandoned(f"u{i}")} for i in range(20)]}
    packed = gzip.compress(json.dumps(body).encode())
    r = client.post(
        "/v1/batch",
        content=packed,
        headers={**WRITE, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert count_events(runtime) == 20
    deflated = zlib.compress(json.dumps(cart_abandoned("d1")).encode())
    r = client.post("/v1/track", content=deflated, headers={**WRITE, "Content-Encoding": "deflate"})
    assert r.status_code == 200


def test_a_gzip_bomb_is_413_and_broken_gzip_is_400(client: TestClient, runtime: Runtime) -> None:
    bomb = gzip.compress(b'{"batch": [], "pad": "' + b"x" * 5_000_000 + b'"}')
    assert len(bomb) < 64 * 1024
    r = client.post("/v1/batch", content=bomb, headers={**WRITE, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    broken = gzip.compress(json.dumps(cart_abandoned("u")).encode())[:-12]
    r = client.post("/v1/track", content=broken, headers={**WRITE, "Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = client.post("/v1/track", content=b"not gzip", headers={**WRITE, "Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = client.post("/v1/track", content=b"{}", headers={**WRITE, "Content-Encoding": "br"})
    assert r.status_code == 415
    assert count_events(runtime) == 0


def test_batch_over_max_batch_events_is_400(client: TestClient, runtime: Runtime) -> None:
    items = [
        {"type": "track", "userId": "u", "event": "x", "messageId": str(i)} for i in range(101)
    ]
    r = client.post("/v1/batch", json={"batch": items}, headers=WRITE)
    assert r.status_code == 400
    assert r.json()["field"] == "batch"
    assert "at most 100" in r.json()["message"]
    assert count_events(runtime) == 0


def test_sender_clock_skew_is_corrected_with_sent_at(client: TestClient, runtime: Runtime) -> None:
    now = runtime.clock.now()
    sender_clock = now + timedelta(hours=3)  # the device's clock is 3 hours fast
    item = {
        "type": "track",
        **cart_abandoned("u1"),
        "timestamp": (sender_clock - timedelta(minutes=5)).isoformat(),
    }
    body = {"batch": [item], "sentAt": sender_clock.isoformat()}
    assert client.post("/v1/batch", json=body, headers=WRITE).is_success
    [event] = rows(runtime, t.events)
    assert event.occurred_at == now - timedelta(minutes=5)


def test_timestamps_without_sent_at_are_kept(client: TestClient, runtime: Runtime) -> None:
    at = datetime(2025, 12, 24, 18, 30, tzinfo=UTC)
    body = cart_abandoned("u1") | {"timestamp": "2025-12-24T19:30:00+01:00"}
    assert client.post("/v1/track", json=body, headers=WRITE).is_success
    [event] = rows(runtime, t.events)
    assert event.occurred_at == at


def test_null_properties_traits_and_context_mean_empty(
    client: TestClient, runtime: Runtime
) -> None:
    body = cart_abandoned("u1") | {"properties": None, "context": None, "traits": None}
    r = client.post(
        "/v1/track", json=body | {"properties": {"total": 1, "cart_id": "c"}}, headers=WRITE
    )
    assert r.is_success
    r = client.post(
        "/v1/identify", json={"userId": "u1", "traits": None, "messageId": "i"}, headers=WRITE
    )
    assert r.is_success

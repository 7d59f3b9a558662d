"""Provider webhooks through the app, signed with test keys: verified events are matched to
the delivery and its customer and recorded once; anything unverified is 401 and changes
nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from starlette.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.conftest import SendGridKeys
from tests.orchestrator.api.support import (
    ENV,
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    basic,
    email_sent_to,
    enrollment,
    events_named,
    make_runtime,
    make_settings,
    rows,
)

ON_POSTGRES_TOO = True  # each test runs on SQLite and on PostgreSQL


def count(runtime: Runtime, table: Any) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def sendgrid_post(
    client: TestClient,
    keys: SendGridKeys,
    events: list[dict[str, Any]],
    ts: int,
    *,
    tamper: bool = False,
) -> Any:
    body = json.dumps(events).encode()
    signature = keys.private.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
    sent = body.replace(b"open", b"click") if tamper else body
    return client.post(
        "/v1/webhooks/sendgrid",
        content=sent,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(ts),
        },
    )


def sg_events(key: str, ts: int) -> list[dict[str, Any]]:
    base = {
        "email": "u1@example.com",
        "timestamp": ts,
        "sg_message_id": "x.filter",
        "parcours_key": key,
    }
    return [
        base | {"event": "processed", "sg_event_id": "sg-0"},
        base | {"event": "delivered", "sg_event_id": "sg-1"},
        base | {"event": "open", "sg_event_id": "sg-2"},
        base | {"event": "click", "sg_event_id": "sg-3", "url": "https://shop.example/cart/c1"},
    ]


def test_sendgrid_events_are_matched_recorded_once_and_react(
    client: TestClient, runtime: Runtime, sendgrid_keys: SendGridKeys
) -> None:
    email = email_sent_to(client, runtime)
    ts = int(runtime.clock.now().timestamp())
    r = sendgrid_post(client, sendgrid_keys, sg_events(email.idempotency_key, ts), ts)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 3, "recorded": 3, "duplicates": 0, "unmatched": 0}
    [opened] = events_named(runtime, "email.opened")
    assert opened.customer_id == "u1"
    assert opened.message_id == "sendgrid:sg-2"
    assert opened.properties["delivery_key"] == email.idempotency_key
    assert opened.properties["provider"] == "sendgrid"
    assert len(events_named(runtime, "email.delivered")) == 1
    again = sendgrid_post(client, sendgrid_keys, sg_events(email.idempotency_key, ts), ts)
    assert again.json() == {"received": 3, "recorded": 0, "duplicates": 3, "unmatched": 0}
    assert len(events_named(runtime, "email.clicked")) == 1
    runtime.engine.run_until_idle()
    assert enrollment(runtime).state == "engaged"


def test_unverified_sendgrid_posts_are_401_and_change_nothing(
    client: TestClient, runtime: Runtime, sendgrid_keys: SendGridKeys
) -> None:
    email = email_sent_to(client, runtime)
    ts = int(runtime.clock.now().timestamp())
    events = sg_events(email.idempotency_key, ts)
    before = count(runtime, t.events)
    assert sendgrid_post(client, sendgrid_keys, events, ts, tamper=True).status_code == 401
    stale = ts - 3600
    assert sendgrid_post(client, sendgrid_keys, events, stale).status_code == 401
    other = SendGridKeys(ec.generate_private_key(ec.SECP256R1()), "")
    assert sendgrid_post(client, other, events, ts).status_code == 401
    unsigned = client.post("/v1/webhooks/sendgrid", json=events)
    assert unsigned.status_code == 401
    assert unsigned.json()["code"] == "unauthorized"
    assert count(runtime, t.events) == before
    assert count(runtime, t.provider_events) == 0


def test_verified_but_malformed_sendgrid_payload_is_400(
    client: TestClient, runtime: Runtime, sendgrid_keys: SendGridKeys
) -> None:
    ts = int(runtime.clock.now().timestamp())
    r = sendgrid_post(client, sendgrid_keys, [{"event": "open"}], ts)  # no sg_event_id
    assert r.status_code == 400
    assert count(runtime, t.provider_events) == 0


def test_events_about_unknown_deliveries_are_counted_unmatched(
    client: TestClient, runtime: Runtime, sendgrid_keys: SendGridKeys
) -> None:
    ts = int(runtime.clock.now().timestamp())
    r = sendgrid_post(client, sendgrid_keys, sg_events("no-such-delivery", ts), ts)
    assert r.json() == {"received": 3, "recorded": 0, "duplicates": 0, "unmatched": 3}
    assert count(runtime, t.events) == 0


def test_a_sendgrid_unsubscribe_revokes_consent(
    client: TestClient, runtime: Runtime, sendgrid_keys: SendGridKeys
) -> None:
    email = email_sent_to(client, runtime)
    ts = int(runtime.clock.now().timestamp())
    event = {
        "event": "unsubscribe",
        "sg_event_id": "u-1",
        "timestamp": ts,
        "parcours_key": email.idempotency_key,
        "email": "u1@example.com",
    }
    assert sendgrid_post(client, sendgrid_keys, [event], ts).status_code == 200
    [customer] = rows(runtime, t.customers, t.customers.c.id == "u1")
    assert customer.consent["email"]["granted"] is False
    assert customer.consent["email"]["source"] == "sendgrid:unsubscribe"


def mailgun_body(
    token: str, ts: int, key: str, *, event_id: str = "mg-1", signing_key: str = MAILGUN_KEY
) -> dict[str, Any]:
    signature = hmac.new(signing_key.encode(), f"{ts}{token}".encode(), hashlib.sha256)
    return {
        "signature": {"timestamp": str(ts), "token": token, "signature": signature.hexdigest()},
        "event-data": {
            "event": "opened",
            "id": event_id,
            "timestamp": ts,
            "recipient": "u1@example.com",
            "user-variables": {"parcours_key": key},
            "message": {"headers": {"message-id": "mg-message@example"}},
        },
    }


def test_mailgun_events_are_recorded_and_a_token_is_used_once(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    ts = int(runtime.clock.now().timestamp())
    r = client.post("/v1/webhooks/mailgun", json=mailgun_body("tok-1", ts, email.idempotency_key))
    assert r.status_code == 200
    assert r.json()["recorded"] == 1
    [opened] = events_named(runtime, "email.opened")
    assert "mailgun_token" not in opened.properties
    replay = client.post(
        "/v1/webhooks/mailgun",
        json=mailgun_body("tok-1", ts, email.idempotency_key, event_id="mg-2"),
    )
    assert replay.status_code == 401
    forged = client.post(
        "/v1/webhooks/mailgun",
        json=mailgun_body(
            "tok-2", ts, email.idempotency_key, event_id="mg-3", signing_key="wrong-key"
        ),
    )
    assert forged.status_code == 401
    late = ts - 3600
    stale = client.post(
        "/v1/webhooks/mailgun",
        json=mailgun_body("tok-3", late, email.idempotency_key, event_id="mg-4"),
    )
    assert stale.status_code == 401
    assert len(events_named(runtime, "email.opened")) == 1


def postmark_click(message_id: str, key: str) -> dict[str, Any]:
    return {
        "RecordType": "Click",
        "MessageID": message_id,
        "ReceivedAt": "2026-01-05T09:30:00Z",
        "OriginalLink": "https://shop.example/cart/c1",
        "Recipient": "u1@example.com",
        "Metadata": {"parcours_key": key},
    }


def test_postmark_needs_its_basic_credentials(client: TestClient, runtime: Runtime) -> None:
    email = email_sent_to(client, runtime)
    body = postmark_click(f"log-{email.idempotency_key}", "")  # matched by provider id
    assert client.post("/v1/webhooks/postmark", json=body).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"postmark:nope").decode()}
    assert client.post("/v1/webhooks/postmark", json=body, headers=wrong).status_code == 401
    assert events_named(runtime, "email.clicked") == []
    good = {
        "Authorization": "Basic "
        + base64.b64encode(f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()).decode()
    }
    r = client.post("/v1/webhooks/postmark", json=body, headers=good)
    assert r.status_code == 200
    assert r.json()["recorded"] == 1
    [clicked] = events_named(runtime, "email.clicked")
    assert clicked.properties["delivery_key"] == email.idempotency_key
    assert clicked.properties["provider_message_id"] == f"log-{email.idempotency_key}"


def test_a_provider_without_a_configured_channel_is_404(
    tmp_path: Path, migrated_db: Path, clock: VirtualClock
) -> None:
    import shutil

    path = tmp_path / "plain.db"
    shutil.copyfile(migrated_db, path)
    settings = make_settings(
        path,
        "",
        channels={
            "email": {"type": "log", "kind": "owned", "medium": "email"},
            "site": {"type": "log", "kind": "owned", "medium": "site"},
            "retargeting": {"type": "log", "kind": "paid", "medium": "audience"},
        },
    )
    runtime = make_runtime(settings, clock)
    with TestClient(create_app(runtime, env=ENV)) as client:
        for provider in ("sendgrid", "mailgun", "postmark"):
            r = client.post(f"/v1/webhooks/{provider}", json=[], headers=basic("x"))
            assert r.status_code == 404
            assert "webhook_provider" in r.json()["message"]
    runtime.db.dispose()


def test_clock_for_tolerance_is_the_runtime_clock(
    client: TestClient, runtime: Runtime, clock: VirtualClock, sendgrid_keys: SendGridKeys
) -> None:
    email = email_sent_to(client, runtime)
    ts = int(runtime.clock.now().timestamp())
    clock.advance(timedelta(hours=1))
    late = sendgrid_post(client, sendgrid_keys, sg_events(email.idempotency_key, ts), ts)
    assert late.status_code == 401

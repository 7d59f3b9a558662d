"""Provider webhook receivers: signatures verified with freshly generated test keys, events
normalised to parcours events with the provider event id and the delivery key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.base import CallbackReceiver, ConfigurationError, InboundRequest
from channels.callbacks import build_receiver
from channels.callbacks.mailgun import MailgunWebhook
from channels.callbacks.postmark import PostmarkWebhook
from channels.callbacks.sendgrid import SendGridEventWebhook
from channels.postmark import PostmarkChannelFactory
from channels.sendgrid import SendGridChannelFactory

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/v1/webhooks/x",
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
    )


# --- SendGrid -------------------------------------------------------------------------


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


SENDGRID_EVENTS = [
    {
        "email": "anna@example.com",
        "timestamp": TS,
        "event": "processed",
        "sg_event_id": "e0",
        "sg_message_id": "m1.filter0001",
        "parcours_key": "enr-1:mail:1",
    },
    {
        "email": "anna@example.com",
        "timestamp": TS,
        "event": "delivered",
        "sg_event_id": "e1",
        "sg_message_id": "m1.filter0001",
        "parcours_key": "enr-1:mail:1",
    },
    {
        "email": "anna@example.com",
        "timestamp": TS + 60,
        "event": "open",
        "sg_event_id": "e2",
        "sg_message_id": "m1.filter0001",
        "parcours_key": "enr-1:mail:1",
    },
    {
        "email": "anna@example.com",
        "timestamp": TS + 90,
        "event": "click",
        "sg_event_id": "e3",
        "url": "https://shop.example/cart",
        "sg_message_id": "m1.f",
        "parcours_key": "enr-1:mail:1",
    },
    {
        "email": "bob@example.com",
        "timestamp": TS,
        "event": "bounce",
        "sg_event_id": "e4",
        "type": "bounce",
        "reason": "550 no such user",
        "sg_message_id": "m2.f",
    },
    {
        "email": "carl@example.com",
        "timestamp": TS,
        "event": "spamreport",
        "sg_event_id": "e5",
        "sg_message_id": "m3.f",
    },
    {
        "email": "dora@example.com",
        "timestamp": TS,
        "event": "group_unsubscribe",
        "sg_event_id": "e6",
        "sg_message_id": "m4.f",
        "asm_group_id": 7,
    },
]


def signed_sendgrid(
    private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int = TS
) -> InboundRequest:
    signature = private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return request(
        body,
        {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
            "Content-Type": "application/json",
        },
    )


def sendgrid_receiver(public_b64: str) -> CallbackReceiver:
    return build_receiver(
        "sendgrid", "sg", {"webhook_public_key": public_b64}, {}, clock=lambda: NOW
    )


def test_sendgrid_verifies_and_parses() -> None:
    private, public = sendgrid_keys()
    receiver = sendgrid_receiver(public)
    body = json.dumps(SENDGRID_EVENTS).encode()
    req = signed_sendgrid(private, body)
    assert receiver.verify(req)
    events = receiver.parse(req)
    assert [(e.event, e.provider_event_id) for e in events] == [
        ("email.delivered", "e1"),
        ("email.opened", "e2"),
        ("email.clicked", "e3"),
        ("email.bounced", "e4"),
        ("email.complained", "e5"),
        ("email.unsubscribed", "e6"),
    ]
    assert events[0].delivery_key == "enr-1:mail:1"
    assert events[0].provider_message_id == "m1"
    assert events[0].email == "anna@example.com"
    assert events[1].occurred_at == NOW + timedelta(seconds=60)
    assert events[2].properties["url"] == "https://shop.example/cart"
    assert events[3].delivery_key is None
    assert events[3].properties["reason"] == "550 no such user"


def test_sendgrid_rejects_wrong_key_modified_body_and_stale_timestamp() -> None:
    private, public = sendgrid_keys()
    other_private, _ = sendgrid_keys()
    receiver = sendgrid_receiver(public)
    body = json.dumps(SENDGRID_EVENTS).encode()
    assert not receiver.verify(signed_sendgrid(other_private, body))
    good = signed_sendgrid(private, body)
    tampered = request(body.replace(b"bounce", b"delivd"), dict(good.headers))
    assert not receiver.verify(tampered)
    assert not receiver.verify(signed_sendgrid(private, body, timestamp=TS - 3600))
    assert not receiver.verify(request(body, {}))
    assert not receiver.verify(
        request(body, {**good.headers, "x-twilio-email-event-webhook-signature": "!!notb64"})
    )


def test_sendgrid_channel_exposes_the_receiver() -> None:
    private, public = sendgrid_keys()
    channel = SendGridChannelFactory(clock=lambda: NOW).build(
        "sg",
        {"from": "a@b.example", "api_key_env": "SG", "webhook_public_key": public},
        {"SG": "k"},
    )
    assert isinstance(channel, CallbackReceiver)
    req = signed_sendgrid(private, json.dumps(SENDGRID_EVENTS[1:2]).encode())
    assert channel.verify(req)
    assert [e.event for e in channel.parse(req)] == ["email.delivered"]
    with pytest.raises(ConfigurationError, match="webhook_public_key"):
        build_receiver("sendgrid", "sg", {"webhook_public_key": "bm90IGEga2V5"}, {})


# --- Mailgun --------------------------------------------------------------------------

MG_KEY = "key-mailgun-signing-0123456789"


def mailgun_body(
    token: str, timestamp: int = TS, key: str = MG_KEY, event: dict[str, Any] | None = None
) -> bytes:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    data = event or {
        "event": "opened",
        "id": "mg-evt-1",
        "timestamp": timestamp + 0.5,
        "recipient": "anna@example.com",
        "user-variables": {"parcours_key": "enr-1:mail:1"},
        "message": {"headers": {"message-id": "20250601.abc@mg.shop.example"}},
    }
    return json.dumps(
        {
            "signature": {"timestamp": str(timestamp), "token": token, "signature": signature},
            "event-data": data,
        }
    ).encode()


def mailgun() -> CallbackReceiver:
    return build_receiver(
        "mailgun", "mg", {"webhook_signing_key_env": "MG"}, {"MG": MG_KEY}, clock=lambda: NOW
    )


def test_mailgun_verifies_and_parses() -> None:
    receiver = mailgun()
    req = request(mailgun_body("tok-1"), {"Content-Type": "application/json"})
    assert receiver.verify(req)
    (event,) = receiver.parse(req)
    assert event.event == "email.opened"
    assert event.provider_event_id == "mg-evt-1"
    assert event.delivery_key == "enr-1:mail:1"
    assert event.provider_message_id == "20250601.abc@mg.shop.example"
    assert event.properties["mailgun_token"] == "tok-1"
    assert MailgunWebhook.token(req) == "tok-1"


def test_mailgun_rejects_reused_token_wrong_key_modified_and_stale() -> None:
    receiver = mailgun()
    assert receiver.verify(request(mailgun_body("tok-2"), {}))
    assert not receiver.verify(request(mailgun_body("tok-2"), {}))  # replay
    assert not receiver.verify(request(mailgun_body("tok-3", key="wrong-key-xxxxxxxxxx"), {}))
    forged = json.loads(mailgun_body("tok-4"))
    forged["signature"]["timestamp"] = str(TS + 1)
    assert not receiver.verify(request(json.dumps(forged).encode(), {}))
    assert not receiver.verify(request(mailgun_body("tok-5", timestamp=TS - 3600), {}))
    assert not receiver.verify(request(b"not json", {}))
    # A forged request must not burn the genuine token.
    assert receiver.verify(request(mailgun_body("tok-3"), {}))


def test_mailgun_external_replay_guard() -> None:
    used: set[str] = set()

    def guard(token: str) -> bool:
        fresh = token not in used
        used.add(token)
        return fresh

    receiver = MailgunWebhook(MG_KEY, clock=lambda: NOW, token_guard=guard)
    assert receiver.verify(request(mailgun_body("t"), {}))
    assert used == {"t"}
    assert not receiver.verify(request(mailgun_body("t"), {}))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"event": "failed", "severity": "permanent", "reason": "bounce"}, "email.bounced"),
        ({"event": "failed", "severity": "temporary"}, None),
        ({"event": "complained"}, "email.complained"),
        ({"event": "unsubscribed"}, "email.unsubscribed"),
        ({"event": "clicked", "url": "https://x.example"}, "email.clicked"),
        ({"event": "accepted"}, None),
    ],
)
def test_mailgun_event_mapping(data: dict[str, Any], expected: str | None) -> None:
    event = {"id": "e", "timestamp": TS, "recipient": "a@b.example", **data}
    events = mailgun().parse(request(mailgun_body("t", event=event), {}))
    assert [e.event for e in events] == ([expected] if expected else [])


# --- Postmark -------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def postmark() -> PostmarkWebhook:
    receiver = build_receiver(
        "postmark",
        "pm",
        {"webhook_username": "hook", "webhook_password_env": "PMH"},
        {"PMH": "p@ss:word"},
    )
    assert isinstance(receiver, PostmarkWebhook)
    return receiver


def test_postmark_basic_auth() -> None:
    receiver = postmark()
    body = b"{}"
    assert receiver.verify(request(body, basic("hook", "p@ss:word")))
    assert not receiver.verify(request(body, basic("hook", "wrong")))
    assert not receiver.verify(request(body, basic("other", "p@ss:word")))
    assert not receiver.verify(request(body, {"Authorization": "Bearer x"}))
    assert not receiver.verify(request(body, {"Authorization": "Basic %%%"}))
    assert not receiver.verify(request(body, {}))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"RecordType": "Delivery", "DeliveredAt": "2025-06-01T12:00:00Z"}, "email.delivered"),
        ({"RecordType": "Open", "ReceivedAt": "2025-06-01T12:00:00Z"}, "email.opened"),
        (
            {
                "RecordType": "Click",
                "ReceivedAt": "2025-06-01T12:00:00Z",
                "OriginalLink": "https://shop.example",
            },
            "email.clicked",
        ),
        (
            {
                "RecordType": "Bounce",
                "ID": 42,
                "Type": "HardBounce",
                "Email": "a@b.example",
                "BouncedAt": "2025-06-01T12:00:00Z",
                "Inactive": True,
            },
            "email.bounced",
        ),
        (
            {
                "RecordType": "Bounce",
                "ID": 43,
                "Type": "Transient",
                "BouncedAt": "2025-06-01T12:00:00Z",
                "Inactive": False,
            },
            None,
        ),
        (
            {
                "RecordType": "SpamComplaint",
                "ID": 44,
                "Type": "SpamComplaint",
                "BouncedAt": "2025-06-01T12:00:00Z",
            },
            "email.complained",
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "ChangedAt": "2025-06-01T12:00:00Z",
                "SuppressSending": True,
                "SuppressionReason": "ManualSuppression",
            },
            "email.unsubscribed",
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "ChangedAt": "2025-06-01T12:00:00Z",
                "SuppressSending": False,
                "SuppressionReason": None,
            },
            None,
        ),
    ],
)
def test_postmark_event_mapping(record: dict[str, Any], expected: str | None) -> None:
    record = {
        "MessageID": "pm-msg-1",
        "Recipient": "anna@example.com",
        "Metadata": {"parcours_key": "enr-1:mail:1"},
        **record,
    }
    events = postmark().parse(request(json.dumps(record).encode(), {}))
    assert [e.event for e in events] == ([expected] if expected else [])
    if events:
        (event,) = events
        assert event.delivery_key == "enr-1:mail:1"
        assert event.provider_message_id == "pm-msg-1"
        assert event.occurred_at == NOW
        assert event.provider_event_id


def test_postmark_event_ids_are_stable_for_dedup() -> None:
    body = json.dumps(
        {"RecordType": "Open", "MessageID": "m", "ReceivedAt": "2025-06-01T12:00:00Z"}
    ).encode()
    first = postmark().parse(request(body, {}))[0].provider_event_id
    assert first == postmark().parse(request(body, {}))[0].provider_event_id


def test_postmark_channel_exposes_the_receiver() -> None:
    channel = PostmarkChannelFactory().build(
        "pm",
        {
            "from": "a@b.example",
            "server_token_env": "T",
            "webhook_username": "hook",
            "webhook_password_env": "PMH",
        },
        {"T": "t", "PMH": "pw"},
    )
    assert channel.verify(request(b"{}", basic("hook", "pw")))
    assert not channel.verify(request(b"{}", basic("hook", "nope")))


def test_unknown_provider() -> None:
    with pytest.raises(ConfigurationError, match="mailgun, postmark, sendgrid"):
        build_receiver("sparkpost", "x", {}, {})


def test_parse_rejects_garbage() -> None:
    _, public = sendgrid_keys()
    with pytest.raises(ValueError, match="JSON"):
        sendgrid_receiver(public).parse(request(b"<xml/>", {}))
    with pytest.raises(ValueError, match="array"):
        sendgrid_receiver(public).parse(request(b"{}", {}))
    assert isinstance(sendgrid_receiver(public), SendGridEventWebhook)

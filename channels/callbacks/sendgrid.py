"""SendGrid's signed Event Webhook.

SendGrid signs ``timestamp + raw body`` with ECDSA (P-256, SHA-256) and sends the base64
DER signature and the timestamp in ``X-Twilio-Email-Event-Webhook-Signature`` and
``X-Twilio-Email-Event-Webhook-Timestamp``; the public key is shown (base64 DER) in the
mail settings. SendGrid documents no replay window, so ours is a setting
(``webhook_tolerance_seconds``, default 600) rather than a guess baked in.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from channels.base import ConfigurationError, InboundRequest, ProviderEvent
from channels.callbacks.common import from_unix, header, json_payload, text_or_none
from channels.email_content import DELIVERY_KEY_FIELD
from channels.http import Clock, utcnow
from channels.settings import Settings

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_EVENTS: Mapping[str, str] = {
    "delivered": "email.delivered",
    "open": "email.opened",
    "click": "email.clicked",
    "bounce": "email.bounced",
    "dropped": "email.bounced",
    "spamreport": "email.complained",
    "unsubscribe": "email.unsubscribed",
    "group_unsubscribe": "email.unsubscribed",
}


class SendGridEventWebhook:
    """Verifies and parses SendGrid Event Webhook posts."""

    def __init__(
        self, public_key: ec.EllipticCurvePublicKey, *, tolerance: float = 600.0, clock: Clock
    ) -> None:
        self._key = public_key
        self._tolerance = tolerance
        self._clock = clock

    @classmethod
    def from_settings(cls, s: Settings, *, clock: Clock = utcnow) -> SendGridEventWebhook:
        encoded = s.text("webhook_public_key", example='webhook_public_key = "MFkwEwYH..."')
        try:
            key = load_der_public_key(base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error, TypeError) as exc:
            raise ConfigurationError(
                f"channel {s.channel!r}: webhook_public_key is not a base64 DER public key"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigurationError(f"channel {s.channel!r}: webhook_public_key is not ECDSA")
        return cls(key, tolerance=s.number("webhook_tolerance_seconds", 600.0), clock=clock)

    def verify(self, request: InboundRequest) -> bool:
        signature = header(request, SIGNATURE_HEADER)
        timestamp = header(request, TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return False
        try:
            sent_at = float(timestamp)
            raw_signature = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            return False
        if abs(self._clock().timestamp() - sent_at) > self._tolerance:
            return False
        try:
            self._key.verify(
                raw_signature, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            return False
        return True

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        data = json_payload(request)
        if not isinstance(data, list):
            raise ValueError("SendGrid posts a JSON array of events")
        events: list[ProviderEvent] = []
        for item in data:
            if not isinstance(item, dict):
                raise ValueError("SendGrid event is not an object")
            name = _EVENTS.get(str(item.get("event")))
            if name is None:
                continue  # processed, deferred, group_resubscribe: not reactions
            events.append(_event(name, item))
        return events


def _event(name: str, item: Mapping[str, Any]) -> ProviderEvent:
    event_id = text_or_none(item, "sg_event_id")
    if event_id is None:
        raise ValueError("SendGrid event without sg_event_id")
    message_id = text_or_none(item, "sg_message_id")
    properties: dict[str, Any] = {"provider": "sendgrid", "provider_event": item.get("event")}
    for key in ("url", "reason", "type", "status", "useragent", "ip", "asm_group_id"):
        if key in item:
            properties[key] = item[key]
    if item.get("event") == "dropped":
        properties["dropped"] = True
    return ProviderEvent(
        event=name,
        provider_event_id=event_id,
        occurred_at=from_unix(item.get("timestamp")),
        delivery_key=text_or_none(item, DELIVERY_KEY_FIELD),
        # sg_message_id is "<X-Message-Id>.<filter suffix>"; keep the part send() returned.
        provider_message_id=message_id.split(".", 1)[0] if message_id else None,
        email=text_or_none(item, "email"),
        properties=properties,
    )

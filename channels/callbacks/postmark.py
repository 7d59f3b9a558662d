"""Postmark webhooks, authenticated with HTTP basic auth.

Postmark does not sign webhooks; it sends the credentials embedded in the webhook URL as an
``Authorization: Basic`` header. Both user name and password are compared in constant time.
Postmark posts one record per request; only permanent bounces count as ``email.bounced``
and only a recipient's own unsubscribe (``ManualSuppression``) as ``email.unsubscribed``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from channels.base import InboundRequest, ProviderEvent
from channels.callbacks.common import from_iso, header, json_payload, text_or_none
from channels.email_content import DELIVERY_KEY_FIELD
from channels.settings import Settings

#: Bounce types after which Postmark will not deliver to the address again.
HARD_BOUNCES = frozenset(
    {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "Blocked", "SpamNotification"}
)

_TIMESTAMP_FIELD: Mapping[str, str] = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


class PostmarkWebhook:
    """Verifies and parses Postmark webhook posts."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    @classmethod
    def from_settings(cls, s: Settings) -> PostmarkWebhook:
        return cls(
            s.text("webhook_username", example='webhook_username = "postmark"'),
            s.secret("webhook_password_env", example='webhook_password_env = "PM_HOOK_PASS"'),
        )

    def verify(self, request: InboundRequest) -> bool:
        value = header(request, "Authorization") or ""
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (ValueError, binascii.Error):
            return False
        user, sep, password = decoded.partition(b":")
        # Evaluate both comparisons so timing does not tell which part was wrong.
        user_ok = hmac.compare_digest(user, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        item = json_payload(request)
        if not isinstance(item, dict):
            raise ValueError("Postmark posts one JSON object per event")
        record = str(item.get("RecordType"))
        name = _event_name(record, item)
        if name is None:
            return []
        message_id = text_or_none(item, "MessageID")
        at_field = _TIMESTAMP_FIELD[record]
        occurred_at = from_iso(item.get(at_field))
        # Bounces carry an ID; other records are identified by what they are about.
        event_id = (
            f"bounce:{item['ID']}"
            if record in ("Bounce", "SpamComplaint") and item.get("ID") is not None
            else f"{record}:{message_id}:{item.get(at_field)}"
        )
        metadata = item.get("Metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        properties: dict[str, Any] = {"provider": "postmark", "provider_event": record}
        for key in ("OriginalLink", "Type", "Description", "SuppressionReason", "Tag"):
            if key in item:
                properties[key] = item[key]
        return [
            ProviderEvent(
                event=name,
                provider_event_id=event_id,
                occurred_at=occurred_at,
                delivery_key=text_or_none(metadata, DELIVERY_KEY_FIELD),
                provider_message_id=message_id,
                email=text_or_none(item, "Recipient") or text_or_none(item, "Email"),
                properties=properties,
            )
        ]


def _event_name(record: str, item: Mapping[str, Any]) -> str | None:
    if record == "Delivery":
        return "email.delivered"
    if record == "Open":
        return "email.opened"
    if record == "Click":
        return "email.clicked"
    if record == "SpamComplaint":
        return "email.complained"
    if record == "Bounce":
        hard = item.get("Type") in HARD_BOUNCES or item.get("Inactive") is True
        return "email.bounced" if hard else None
    if record == "SubscriptionChange":
        manual = item.get("SuppressionReason") == "ManualSuppression"
        return "email.unsubscribed" if item.get("SuppressSending") is True and manual else None
    return None

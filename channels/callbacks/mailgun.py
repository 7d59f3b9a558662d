"""Mailgun webhooks.

Mailgun signs ``timestamp + token`` with HMAC-SHA256 under the webhook signing key. A
signature alone does not stop replays, so the receiver also checks that the timestamp is
recent and that the token was not seen before. The seen-token check is a callable so the
orchestrator can back it with its database when it runs several replicas; the default is
an in-process cache that forgets tokens once they are older than the replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from channels.base import InboundRequest, ProviderEvent
from channels.callbacks.common import from_unix, json_payload, text_or_none
from channels.email_content import DELIVERY_KEY_FIELD
from channels.http import Clock, utcnow
from channels.settings import Settings

#: Called with a token; returns True the first time, False when it was already used.
TokenGuard = Callable[[str], bool]

_EVENTS: Mapping[str, str] = {
    "delivered": "email.delivered",
    "opened": "email.opened",
    "clicked": "email.clicked",
    "complained": "email.complained",
    "unsubscribed": "email.unsubscribed",
}


class RecentTokens:
    """An in-memory token guard for one process, bounded in time and size."""

    def __init__(self, ttl: float, max_size: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __call__(self, token: str) -> bool:
        now = time.monotonic()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self._ttl and len(self._seen) < self._max:
                break
            del self._seen[oldest]
        if token in self._seen:
            return False
        self._seen[token] = now
        return True


def signature_block(request: InboundRequest) -> Mapping[str, Any]:
    data = json_payload(request)
    block = data.get("signature") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise ValueError("Mailgun webhook without a 'signature' object")
    return block


class MailgunWebhook:
    """Verifies and parses Mailgun webhook posts (JSON, ``signature`` + ``event-data``)."""

    def __init__(
        self,
        signing_key: str,
        *,
        tolerance: float = 300.0,
        clock: Clock = utcnow,
        token_guard: TokenGuard | None = None,
    ) -> None:
        self._key = signing_key.encode()
        self._tolerance = tolerance
        self._clock = clock
        self._guard = token_guard or RecentTokens(ttl=tolerance * 2)

    @classmethod
    def from_settings(
        cls, s: Settings, *, clock: Clock = utcnow, token_guard: TokenGuard | None = None
    ) -> MailgunWebhook:
        key = s.secret("webhook_signing_key_env", example='webhook_signing_key_env = "MG_KEY"')
        return cls(
            key,
            tolerance=s.number("webhook_tolerance_seconds", 300.0),
            clock=clock,
            token_guard=token_guard,
        )

    @staticmethod
    def token(request: InboundRequest) -> str | None:
        """The request's one-time token, for callers that keep their own replay record."""
        try:
            value = signature_block(request).get("token")
        except ValueError:
            return None
        return value if isinstance(value, str) else None

    def verify(self, request: InboundRequest) -> bool:
        """Signature, freshness, then first use of the token (in that order, so a forged
        request cannot burn a genuine token)."""
        try:
            block = signature_block(request)
        except ValueError:
            return False
        timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str | int) and str(v) for v in (timestamp, token, signature)):
            return False
        expected = hmac.new(self._key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), str(signature).encode()):
            return False
        try:
            sent_at = float(str(timestamp))
        except ValueError:
            return False
        if abs(self._clock().timestamp() - sent_at) > self._tolerance:
            return False
        return self._guard(str(token))

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        data = json_payload(request)
        item = data.get("event-data") if isinstance(data, dict) else None
        if not isinstance(item, dict):
            raise ValueError("Mailgun webhook without 'event-data'")
        kind = str(item.get("event"))
        name = _EVENTS.get(kind)
        if kind == "failed":
            # Temporary failures are retried by Mailgun; only permanent ones are bounces.
            name = "email.bounced" if item.get("severity") == "permanent" else None
        if name is None:
            return []
        event_id = text_or_none(item, "id")
        if event_id is None:
            raise ValueError("Mailgun event without id")
        variables = item.get("user-variables")
        variables = variables if isinstance(variables, dict) else {}
        message = item.get("message")
        headers = message.get("headers") if isinstance(message, dict) else None
        message_id = headers.get("message-id") if isinstance(headers, dict) else None
        properties: dict[str, Any] = {
            "provider": "mailgun",
            "provider_event": kind,
            "mailgun_token": self.token(request),
        }
        for key in ("url", "reason", "severity"):
            if key in item:
                properties[key] = item[key]
        return [
            ProviderEvent(
                event=name,
                provider_event_id=event_id,
                occurred_at=from_unix(item.get("timestamp")),
                delivery_key=text_or_none(variables, DELIVERY_KEY_FIELD),
                provider_message_id=str(message_id) if message_id else None,
                email=text_or_none(item, "recipient"),
                properties=properties,
            )
        ]

"""The ``webhook`` adapter: a signed JSON POST to an endpoint of the brand's choosing.

The payload is the rendered template ``body`` (a JSON object) plus delivery metadata. The
receiver can check it came from us: ``X-Parcours-Signature: sha256=<hex>`` is an
HMAC-SHA256 under a shared secret over ``"{timestamp}.{raw body}"``, with the timestamp in
``X-Parcours-Timestamp`` so an old request cannot be replayed later. ``Idempotency-Key``
carries the delivery key, identical on every retry, so the receiver can de-duplicate.
Owned or paid is the operator's call (``kind`` setting), hence no fixed ``kind`` here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import httpx

from channels.base import ChannelKind, ConfigurationError, Delivery, PermanentError, SendResult
from channels.http import Clock, HttpChannelFactory, json_body, send_json, utcnow
from channels.settings import Settings

SIGNATURE_HEADER = "X-Parcours-Signature"
TIMESTAMP_HEADER = "X-Parcours-Timestamp"


def sign(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """The ``X-Parcours-Signature`` value for a body sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify_signature(
    secret: bytes | str,
    *,
    body: bytes,
    timestamp: str,
    signature: str,
    now: datetime,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver of our webhooks runs (documented for integrators; used in tests)."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body), signature)


class WebhookChannel:
    """POSTs one signed JSON document per delivery."""

    medium = "webhook"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        secret: str,
        kind: ChannelKind = "owned",
        client: httpx.AsyncClient,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self.kind: ChannelKind = kind
        self._url = url
        self._secret = secret
        self._client = client
        self._clock = clock

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        body: Any = {}
        if delivery.content.get("body"):
            try:
                body = json.loads(delivery.content["body"])
            except json.JSONDecodeError as exc:
                raise PermanentError(
                    f"delivery {delivery.idempotency_key}: rendered body is not JSON: {exc}"
                ) from exc
        return {
            "delivery": {
                "idempotency_key": delivery.idempotency_key,
                "channel": delivery.channel,
                "journey": delivery.journey,
                "step": delivery.step,
                "customer_id": delivery.recipient.customer_id,
                "metadata": dict(delivery.metadata),
            },
            "body": body,
        }

    async def send(self, delivery: Delivery) -> SendResult:
        raw = json.dumps(self.payload(delivery), sort_keys=True, separators=(",", ":")).encode()
        timestamp = int(self._clock().timestamp())
        response = await send_json(
            self._client,
            "POST",
            self._url,
            provider=f"webhook {self.name}",
            content=raw,
            headers={
                SIGNATURE_HEADER: sign(self._secret, timestamp, raw),
                TIMESTAMP_HEADER: str(timestamp),
                "Idempotency-Key": delivery.idempotency_key,
            },
            clock=self._clock,
        )
        data = json_body(response)
        message_id = None
        if isinstance(data, dict) and isinstance(data.get("id"), str | int):
            message_id = str(data["id"])
        return SendResult(provider_message_id=message_id or delivery.idempotency_key)

    async def aclose(self) -> None:
        await self._client.aclose()


class WebhookChannelFactory(HttpChannelFactory):
    """Entry point ``webhook``. Settings: ``url``, ``secret_env``, ``kind`` (``owned`` or
    ``paid``, default owned), ``timeout``."""

    type_name: ClassVar[str] = "webhook"
    kind: ClassVar[ChannelKind | None] = None
    medium: ClassVar[str | None] = "webhook"
    needs_template: ClassVar[bool] = False

    def build(
        self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> WebhookChannel:
        s = Settings(name, self.type_name, settings, env)
        url = s.text("url", example='url = "https://crm.example/hooks/parcours"')
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError(f"channel {name!r}: setting 'url' must be an http(s) URL")
        secret = s.secret("secret_env", example='secret_env = "PARCOURS_WEBHOOK_SECRET"')
        kind = s.choice("kind", ("owned", "paid"), "owned")
        return WebhookChannel(
            name,
            url=url,
            secret=secret,
            kind="paid" if kind == "paid" else "owned",
            client=self.client(s),
            clock=self._clock,
        )

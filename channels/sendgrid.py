"""The ``sendgrid`` adapter: email through SendGrid's ``POST /v3/mail/send``.

SendGrid accepts with ``202`` and the message id in ``X-Message-Id``. The idempotency key
travels in ``custom_args``, which SendGrid attaches to every Event Webhook event, so opens,
clicks and bounces can be matched back to the delivery. SendGrid's own click and open
tracking are switched off: parcours rewrites links itself and would otherwise count twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any, ClassVar

import httpx

from channels.base import (
    ChannelKind,
    ConfigurationError,
    Delivery,
    InboundRequest,
    ProviderEvent,
    SendResult,
)
from channels.callbacks.sendgrid import SendGridEventWebhook
from channels.email_content import DELIVERY_KEY_FIELD, email_parts, unsubscribe_headers
from channels.http import Clock, HttpChannelFactory, json_body, send_json, utcnow
from channels.settings import Settings

API_URL = "https://api.sendgrid.com/v3/mail/send"


def _error_text(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        messages = []
        for err in body["errors"]:
            if isinstance(err, dict):
                field = f"{err['field']}: " if err.get("field") else ""
                messages.append(f"{field}{err.get('message', '')}")
        if messages:
            return "; ".join(messages)
    return response.text[:500] or response.reason_phrase


def _address(value: str) -> dict[str, str]:
    name, email = parseaddr(value)
    return {"email": email, "name": name} if name else {"email": email}


class SendGridChannel:
    """One SendGrid API key and sender."""

    kind: ChannelKind = "owned"
    medium = "email"

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        sender: str,
        reply_to: str | None = None,
        unsubscribe_mailto: str | None = None,
        client: httpx.AsyncClient,
        webhook: SendGridEventWebhook | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._sender = sender
        self._reply_to = reply_to
        self._mailto = unsubscribe_mailto
        self._client = client
        self._webhook = webhook
        self._clock = clock

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        """The documented v3 mail/send body: text/plain must precede text/html."""
        parts = email_parts(delivery)
        content = []
        if parts.text is not None:
            content.append({"type": "text/plain", "value": parts.text})
        if parts.html is not None:
            content.append({"type": "text/html", "value": parts.html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [_address(parts.to)]}],
            "from": _address(self._sender),
            "subject": parts.subject,
            "content": content,
            "custom_args": {DELIVERY_KEY_FIELD: delivery.idempotency_key},
            "tracking_settings": {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
            },
        }
        if self._reply_to:
            body["reply_to"] = _address(self._reply_to)
        headers = unsubscribe_headers(delivery, self._mailto)
        if headers:
            body["headers"] = headers
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        response = await send_json(
            self._client,
            "POST",
            API_URL,
            provider="sendgrid",
            body=self.payload(delivery),
            headers={"Authorization": f"Bearer {self._api_key}"},
            error_text=_error_text,
            clock=self._clock,
        )
        return SendResult(provider_message_id=response.headers.get("x-message-id"))

    def verify(self, request: InboundRequest) -> bool:
        """Signed Event Webhook verification, when a public key is configured."""
        return self._webhook is not None and self._webhook.verify(request)

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        if self._webhook is None:
            raise ValueError(f"channel {self.name!r}: no webhook_public_key configured")
        return self._webhook.parse(request)

    async def aclose(self) -> None:
        await self._client.aclose()


class SendGridChannelFactory(HttpChannelFactory):
    """Entry point ``sendgrid``.

    Settings: ``from``, ``api_key_env``, ``reply_to``, ``unsubscribe_mailto``, ``timeout``;
    for the signed Event Webhook ``webhook_public_key`` (base64 DER, as SendGrid shows it)
    and ``webhook_tolerance_seconds``.
    """

    type_name: ClassVar[str] = "sendgrid"
    kind: ClassVar[ChannelKind | None] = "owned"
    medium: ClassVar[str | None] = "email"
    needs_template: ClassVar[bool] = True

    def build(
        self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> SendGridChannel:
        s = Settings(name, self.type_name, settings, env)
        sender = s.text("from", example='from = "Shop <news@shop.example>"')
        if "@" not in parseaddr(sender)[1]:
            raise ConfigurationError(f"channel {name!r}: setting 'from' has no email address")
        api_key = s.secret("api_key_env", example='api_key_env = "SENDGRID_API_KEY"')
        webhook = (
            SendGridEventWebhook.from_settings(s, clock=self._clock)
            if s.has("webhook_public_key")
            else None
        )
        return SendGridChannel(
            name,
            api_key=api_key,
            sender=sender,
            reply_to=s.opt_text("reply_to"),
            unsubscribe_mailto=s.opt_text("unsubscribe_mailto"),
            client=self.client(s),
            webhook=webhook,
            clock=self._clock,
        )

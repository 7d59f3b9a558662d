"""The ``postmark`` adapter: email through Postmark's ``POST /email``.

Postmark answers errors with HTTP 422 and an ``ErrorCode``; a few codes are transient
(rate limit, maintenance) and are retried, the rest (inactive recipient, invalid request,
unconfirmed sender...) are permanent. The idempotency key goes into ``Metadata`` so
Postmark's webhooks echo it back and events can be matched to the delivery. Postmark's own
open and link tracking is switched off: parcours rewrites links itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from channels.base import ChannelKind, Delivery, InboundRequest, ProviderEvent, SendResult
from channels.callbacks.postmark import PostmarkWebhook
from channels.email_content import DELIVERY_KEY_FIELD, email_parts, unsubscribe_headers
from channels.http import Clock, HttpChannelFactory, json_body, send_json, utcnow
from channels.settings import Settings

API_URL = "https://api.postmarkapp.com/email"

#: Postmark ``ErrorCode`` values worth retrying: 100 maintenance, 429 rate limit exceeded.
RETRYABLE_CODES = frozenset({100, 429})
#: The rest of the documented codes an operator is likely to meet, for readable errors.
ERROR_CODES: Mapping[int, str] = {
    10: "bad or missing API token",
    100: "maintenance",
    300: "invalid email request",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    402: "invalid JSON",
    403: "incompatible JSON",
    405: "not allowed to send",
    406: "inactive recipient",
    409: "JSON required",
    412: "account is pending",
    413: "account may not send",
    429: "rate limit exceeded",
}


def _error_code(response: httpx.Response) -> int | None:
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("ErrorCode"), int):
        return int(body["ErrorCode"])
    return None


def _error_text(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and "ErrorCode" in body:
        code = body.get("ErrorCode")
        name = ERROR_CODES.get(code, "error") if isinstance(code, int) else "error"
        return f"ErrorCode {code} ({name}): {body.get('Message', '')}"
    return response.text[:500] or response.reason_phrase


def _retryable(response: httpx.Response) -> bool:
    return _error_code(response) in RETRYABLE_CODES


class PostmarkChannel:
    """One Postmark server (token) and message stream."""

    kind: ChannelKind = "owned"
    medium = "email"

    def __init__(
        self,
        name: str,
        *,
        token: str,
        sender: str,
        message_stream: str = "outbound",
        reply_to: str | None = None,
        unsubscribe_mailto: str | None = None,
        client: httpx.AsyncClient,
        webhook: PostmarkWebhook | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self._token = token
        self._sender = sender
        self._stream = message_stream
        self._reply_to = reply_to
        self._mailto = unsubscribe_mailto
        self._client = client
        self._webhook = webhook
        self._clock = clock

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        """The documented JSON body of ``POST /email`` for one delivery."""
        parts = email_parts(delivery)
        body: dict[str, Any] = {
            "From": self._sender,
            "To": parts.to,
            "Subject": parts.subject,
            "MessageStream": self._stream,
            "TrackOpens": False,
            "TrackLinks": "None",
            "Metadata": {DELIVERY_KEY_FIELD: delivery.idempotency_key},
        }
        if parts.html is not None:
            body["HtmlBody"] = parts.html
        if parts.text is not None:
            body["TextBody"] = parts.text
        if self._reply_to:
            body["ReplyTo"] = self._reply_to
        headers = unsubscribe_headers(delivery, self._mailto)
        if headers:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        response = await send_json(
            self._client,
            "POST",
            API_URL,
            provider="postmark",
            body=self.payload(delivery),
            headers={"X-Postmark-Server-Token": self._token},
            error_text=_error_text,
            is_retryable=_retryable,
            clock=self._clock,
        )
        data = json_body(response)
        message_id = data.get("MessageID") if isinstance(data, dict) else None
        return SendResult(provider_message_id=message_id, detail={"response": data})

    def verify(self, request: InboundRequest) -> bool:
        """Postmark webhook authentication (HTTP basic auth), when configured."""
        return self._webhook is not None and self._webhook.verify(request)

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        if self._webhook is None:
            raise ValueError(f"channel {self.name!r}: no webhook credentials configured")
        return self._webhook.parse(request)

    async def aclose(self) -> None:
        await self._client.aclose()


class PostmarkChannelFactory(HttpChannelFactory):
    """Entry point ``postmark``.

    Settings: ``from``, ``server_token_env`` (the variable holding the server token),
    ``message_stream`` (default ``outbound``; use your broadcast stream for marketing),
    ``reply_to``, ``unsubscribe_mailto``, ``timeout``; for webhooks ``webhook_username``
    and ``webhook_password_env``.
    """

    type_name: ClassVar[str] = "postmark"
    kind: ClassVar[ChannelKind | None] = "owned"
    medium: ClassVar[str | None] = "email"
    needs_template: ClassVar[bool] = True

    def build(
        self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> PostmarkChannel:
        s = Settings(name, self.type_name, settings, env)
        sender = s.text("from", example='from = "Shop <news@shop.example>"')
        token = s.secret("server_token_env", example='server_token_env = "POSTMARK_TOKEN"')
        webhook = PostmarkWebhook.from_settings(s) if s.has("webhook_username") else None
        return PostmarkChannel(
            name,
            token=token,
            sender=sender,
            message_stream=s.opt_text("message_stream") or "outbound",
            reply_to=s.opt_text("reply_to"),
            unsubscribe_mailto=s.opt_text("unsubscribe_mailto"),
            client=self.client(s),
            webhook=webhook,
            clock=self._clock,
        )

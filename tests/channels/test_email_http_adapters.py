"""Postmark and SendGrid adapters against httpx.MockTransport handlers that check the exact
documented request shapes, and the mapping of provider errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from channels.base import ConfigurationError, Delivery, PermanentError, Recipient, RetryableError
from channels.postmark import PostmarkChannel, PostmarkChannelFactory
from channels.sendgrid import SendGridChannel, SendGridChannelFactory

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

DELIVERY = Delivery(
    idempotency_key="enr-7:mail:1",
    channel="mail",
    journey="cart",
    step="mail",
    recipient=Recipient(customer_id="c-7", email="anna@example.com"),
    content={"subject": "Hi Anna", "text": "Hello", "html": "<p>Hello</p>"},
    unsubscribe_url="https://t.example/u/tok",
)

Handler = Callable[[httpx.Request], httpx.Response]


def postmark(handler: Handler) -> PostmarkChannel:
    return PostmarkChannelFactory(transport=httpx.MockTransport(handler), clock=lambda: NOW).build(
        "pm",
        {"from": "Shop <news@shop.example>", "server_token_env": "PM", "message_stream": "bc"},
        {"PM": "server-token"},
    )


def sendgrid(handler: Handler) -> SendGridChannel:
    return SendGridChannelFactory(transport=httpx.MockTransport(handler), clock=lambda: NOW).build(
        "sg",
        {"from": "Shop <news@shop.example>", "api_key_env": "SG"},
        {"SG": "SG.secret"},
    )


async def test_postmark_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "To": "anna@example.com",
                "SubmittedAt": "2025-06-01T12:00:00Z",
                "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
                "ErrorCode": 0,
                "Message": "OK",
            },
        )

    channel = postmark(handler)
    result = await channel.send(DELIVERY)
    await channel.aclose()
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.postmarkapp.com/email"
    assert request.headers["X-Postmark-Server-Token"] == "server-token"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "From": "Shop <news@shop.example>",
        "To": "anna@example.com",
        "Subject": "Hi Anna",
        "HtmlBody": "<p>Hello</p>",
        "TextBody": "Hello",
        "MessageStream": "bc",
        "TrackOpens": False,
        "TrackLinks": "None",
        "Metadata": {"parcours_key": "enr-7:mail:1"},
        "Headers": [
            {"Name": "List-Unsubscribe", "Value": "<https://t.example/u/tok>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ],
    }
    assert result.provider_message_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (422, {"ErrorCode": 406, "Message": "Inactive recipient"}, PermanentError, "406"),
        (422, {"ErrorCode": 300, "Message": "Invalid 'To' address"}, PermanentError, "To"),
        (401, {"ErrorCode": 10, "Message": "Bad or missing token"}, PermanentError, "token"),
        (422, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, RetryableError, "429"),
        (503, {"ErrorCode": 100, "Message": "Maintenance"}, RetryableError, "aintenance"),
        (500, {"Message": "boom"}, RetryableError, "boom"),
    ],
)
async def test_postmark_error_codes(
    status: int, body: dict[str, Any], error: type[Exception], text: str
) -> None:
    channel = postmark(lambda r: httpx.Response(status, json=body))
    with pytest.raises(error, match=text):
        await channel.send(DELIVERY)


async def test_postmark_retry_after_http_date() -> None:
    channel = postmark(
        lambda r: httpx.Response(429, headers={"Retry-After": "Sun, 01 Jun 2025 12:02:00 GMT"})
    )
    with pytest.raises(RetryableError) as info:
        await channel.send(DELIVERY)
    assert info.value.retry_after == 120.0


async def test_sendgrid_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, headers={"X-Message-Id": "sg-msg-1"})

    channel = sendgrid(handler)
    result = await channel.send(DELIVERY)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == "Bearer SG.secret"
    body = json.loads(request.content)
    assert body == {
        "personalizations": [{"to": [{"email": "anna@example.com"}]}],
        "from": {"email": "news@shop.example", "name": "Shop"},
        "subject": "Hi Anna",
        "content": [
            {"type": "text/plain", "value": "Hello"},
            {"type": "text/html", "value": "<p>Hello</p>"},
        ],
        "custom_args": {"parcours_key": "enr-7:mail:1"},
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
        },
        "headers": {
            "List-Unsubscribe": "<https://t.example/u/tok>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    assert result.provider_message_id == "sg-msg-1"


async def test_sendgrid_errors() -> None:
    bad = {"errors": [{"message": "The from address does not match", "field": "from.email"}]}
    with pytest.raises(PermanentError, match=r"from\.email: The from address does not match"):
        await sendgrid(lambda r: httpx.Response(403, json=bad)).send(DELIVERY)
    with pytest.raises(RetryableError) as info:
        await sendgrid(lambda r: httpx.Response(429, headers={"Retry-After": "30"})).send(DELIVERY)
    assert info.value.retry_after == 30.0


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.ConnectTimeout("x")]
)
async def test_transport_failures_are_retryable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(RetryableError, match="sendgrid"):
        await sendgrid(handler).send(DELIVERY)
    with pytest.raises(RetryableError, match="postmark"):
        await postmark(handler).send(DELIVERY)


async def test_undeliverable_content_is_permanent_without_a_request() -> None:
    calls: list[httpx.Request] = []
    channel = sendgrid(lambda r: calls.append(r) or httpx.Response(202))
    no_email = Delivery(
        idempotency_key="k",
        channel="sg",
        journey="j",
        step="s",
        recipient=Recipient(customer_id="c"),
        content={"subject": "s", "text": "t"},
    )
    with pytest.raises(PermanentError, match="no email"):
        await channel.send(no_email)
    with pytest.raises(PermanentError, match="subject"):
        await channel.send(Delivery("k", "sg", "j", "s", DELIVERY.recipient, content={"text": "t"}))
    assert calls == []


def test_configuration_errors_name_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="server_token_env"):
        PostmarkChannelFactory().build("pm", {"from": "a@b.example"}, {})
    with pytest.raises(ConfigurationError, match="'PM', which is not set"):
        PostmarkChannelFactory().build("pm", {"from": "a@b.example", "server_token_env": "PM"}, {})
    with pytest.raises(ConfigurationError, match="from"):
        SendGridChannelFactory().build("sg", {"api_key_env": "SG"}, {"SG": "x"})

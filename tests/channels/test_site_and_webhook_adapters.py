"""The site adapter (site messages from rendered content) and the signed webhook adapter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from channels.base import ConfigurationError, Delivery, PermanentError, Recipient, RetryableError
from channels.site import SiteChannelFactory
from channels.webhook import WebhookChannelFactory, verify_signature

NOW = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
ANNA = Recipient(customer_id="c-1", email="anna@example.com")


def site_delivery(**content: str) -> Delivery:
    return Delivery("k-site", "site", "cart", "banner", ANNA, content=content)


async def test_site_message_from_ttl() -> None:
    channel = SiteChannelFactory(clock=lambda: NOW).build("site", {}, {})
    result = await channel.send(site_delivery(slot="top", html="<b>Sale</b>", ttl="3d"))
    assert result.site_message is not None
    assert result.site_message.slot == "top"
    assert result.site_message.html == "<b>Sale</b>"
    assert result.site_message.expires_at == NOW + timedelta(days=3)


async def test_site_message_explicit_expiry_and_defaults() -> None:
    channel = SiteChannelFactory(clock=lambda: NOW).build(
        "site", {"default_slot": "inbox", "default_ttl": "12h"}, {}
    )
    explicit = await channel.send(site_delivery(html="x", expires_at="2025-07-01T00:00:00+00:00"))
    assert explicit.site_message is not None
    assert explicit.site_message.slot == "inbox"
    assert explicit.site_message.expires_at == datetime(2025, 7, 1, tzinfo=UTC)
    default = await channel.send(site_delivery(html="x"))
    assert default.site_message is not None
    assert default.site_message.expires_at == NOW + timedelta(hours=12)


async def test_site_message_needs_slot_and_html() -> None:
    channel = SiteChannelFactory().build("site", {}, {})
    with pytest.raises(PermanentError, match="slot"):
        await channel.send(site_delivery(html="x"))
    with pytest.raises(PermanentError, match="expiry"):
        await channel.send(site_delivery(slot="a", html="x", ttl="soon"))
    with pytest.raises(ConfigurationError, match="default_ttl"):
        SiteChannelFactory().build("site", {"default_ttl": "forever"}, {})


def webhook_delivery() -> Delivery:
    return Delivery(
        idempotency_key="enr-3:hook:1",
        channel="crm",
        journey="cart",
        step="notify",
        recipient=ANNA,
        content={"body": json.dumps({"name": "Anna", "cart": "k9"})},
        metadata={"variant": "B"},
    )


async def test_webhook_signed_post() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "crm-77"})

    factory = WebhookChannelFactory(transport=httpx.MockTransport(handler), clock=lambda: NOW)
    channel = factory.build(
        "crm",
        {"url": "https://crm.example/hook", "secret_env": "HOOK", "kind": "paid"},
        {"HOOK": "s3cret"},
    )
    assert channel.kind == "paid"
    result = await channel.send(webhook_delivery())
    await channel.aclose()
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://crm.example/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "enr-3:hook:1"
    timestamp = request.headers["X-Parcours-Timestamp"]
    assert timestamp == str(int(NOW.timestamp()))
    signature = request.headers["X-Parcours-Signature"]
    assert signature.startswith("sha256=")
    assert verify_signature(
        "s3cret", body=request.content, timestamp=timestamp, signature=signature, now=NOW
    )
    assert not verify_signature(
        "other", body=request.content, timestamp=timestamp, signature=signature, now=NOW
    )
    assert not verify_signature(
        "s3cret", body=request.content + b" ", timestamp=timestamp, signature=signature, now=NOW
    )
    assert not verify_signature(
        "s3cret",
        body=request.content,
        timestamp=timestamp,
        signature=signature,
        now=NOW + timedelta(minutes=10),
    )
    assert json.loads(request.content) == {
        "delivery": {
            "idempotency_key": "enr-3:hook:1",
            "channel": "crm",
            "journey": "cart",
            "step": "notify",
            "customer_id": "c-1",
            "metadata": {"variant": "B"},
        },
        "body": {"name": "Anna", "cart": "k9"},
    }
    assert result.provider_message_id == "crm-77"


@pytest.mark.parametrize(
    ("status", "error"), [(500, RetryableError), (429, RetryableError), (410, PermanentError)]
)
async def test_webhook_error_mapping(status: int, error: type[Exception]) -> None:
    factory = WebhookChannelFactory(
        transport=httpx.MockTransport(lambda r: httpx.Response(status, text="nope"))
    )
    channel = factory.build("crm", {"url": "https://x.example", "secret_env": "H"}, {"H": "s"})
    with pytest.raises(error, match="nope"):
        await channel.send(webhook_delivery())


def test_webhook_configuration() -> None:
    with pytest.raises(ConfigurationError, match="url"):
        WebhookChannelFactory().build("crm", {"url": "ftp://x", "secret_env": "H"}, {"H": "s"})
    with pytest.raises(ConfigurationError, match="kind"):
        WebhookChannelFactory().build(
            "crm", {"url": "https://x", "secret_env": "H", "kind": "free"}, {"H": "s"}
        )

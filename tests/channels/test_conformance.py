"""Every built-in adapter passes the conformance kit (channels.testing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiosmtplib
import httpx
import pytest

from channels.base import Channel
from channels.google_customer_match import GoogleCustomerMatchChannelFactory
from channels.log import LogChannelFactory
from channels.meta_audience import MetaAudienceChannelFactory
from channels.postmark import PostmarkChannelFactory
from channels.sendgrid import SendGridChannelFactory
from channels.site import SiteChannelFactory
from channels.smtp import SmtpChannelFactory
from channels.testing import (
    CHECKS,
    AdapterCase,
    ConformanceFailure,
    Exchange,
    Outcome,
    ProviderDouble,
    body_digest,
)
from channels.webhook import WebhookChannelFactory


def smtp_case() -> AdapterCase:
    settings = {"host": "smtp.test", "from": "Shop <news@shop.example>", "security": "none"}

    def connect(double: ProviderDouble) -> Channel:
        async def fake_send(message: Any, **kwargs: Any) -> None:
            exchange = Exchange(
                method="SMTP",
                url=f"smtp://{kwargs['hostname']}:{kwargs['port']}",
                headers={k: str(v) for k, v in message.items()},
                body=message.as_bytes(),
            )
            outcome = double.next_outcome(exchange)
            if outcome is Outcome.RETRYABLE:
                raise aiosmtplib.SMTPResponseException(451, "try again later")
            if outcome is Outcome.TIMEOUT:
                raise aiosmtplib.SMTPTimeoutError("timed out")
            if outcome is Outcome.PERMANENT:
                refused = aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y")
                raise aiosmtplib.SMTPRecipientsRefused([refused])

        return SmtpChannelFactory(smtp_send=fake_send).build("mail", settings, {})

    return AdapterCase(
        name="mail",
        factory=SmtpChannelFactory(),
        settings=settings,
        env={},
        connect=connect,
        required_settings=("host", "from"),
        honours_retry_after=False,
    )


def http_case(
    factory_cls: Callable[..., Any],
    settings: dict[str, Any],
    env: dict[str, str],
    required: tuple[str, ...],
    ok: Callable[[httpx.Request], httpx.Response] | None = None,
    **extra: Any,
) -> AdapterCase:
    name = factory_cls.type_name  # type: ignore[attr-defined]
    return AdapterCase(
        name=name,
        factory=factory_cls(),
        settings=settings,
        env=env,
        connect=lambda d: factory_cls(transport=d.transport).build(name, settings, env),
        required_settings=required,
        ok_response=ok,
        **extra,
    )


def meta_session(exchange: Exchange, _: object) -> str | None:
    return str(exchange.json()["session"]["session_id"])


CASES: dict[str, Callable[[], AdapterCase]] = {
    "smtp": smtp_case,
    "postmark": lambda: http_case(
        PostmarkChannelFactory,
        {"from": "news@shop.example", "server_token_env": "PM_TOKEN"},
        {"PM_TOKEN": "server-token"},
        ("from", "server_token_env"),
        ok=lambda r: httpx.Response(200, json={"MessageID": "pm-1", "ErrorCode": 0}),
    ),
    "sendgrid": lambda: http_case(
        SendGridChannelFactory,
        {"from": "news@shop.example", "api_key_env": "SG_KEY"},
        {"SG_KEY": "SG.key"},
        ("from", "api_key_env"),
        ok=lambda r: httpx.Response(202, headers={"X-Message-Id": "sg-1"}),
    ),
    "webhook": lambda: http_case(
        WebhookChannelFactory,
        {"url": "https://crm.example/hook", "secret_env": "HOOK_SECRET"},
        {"HOOK_SECRET": "s3cret"},
        ("url", "secret_env"),
    ),
    "meta_audience": lambda: http_case(
        MetaAudienceChannelFactory,
        {"audience_id": "2385", "access_token_env": "META_TOKEN"},
        {"META_TOKEN": "meta-token"},
        ("audience_id", "access_token_env"),
        ok=lambda r: httpx.Response(200, json={"audience_id": "2385", "num_received": 1}),
        key_of=meta_session,
    ),
    "google_customer_match": lambda: http_case(
        GoogleCustomerMatchChannelFactory,
        {
            "operating_account_id": "123-456-7890",
            "audience_id": "555",
            "access_token_env": "GDM_TOKEN",
        },
        {"GDM_TOKEN": "ya29.token"},
        ("operating_account_id", "audience_id", "access_token_env"),
        ok=lambda r: httpx.Response(200, json={"requestId": "req-1"}),
        key_of=body_digest,
    ),
    "site": lambda: AdapterCase(
        name="site",
        factory=SiteChannelFactory(),
        settings={},
        env={},
        connect=lambda d: SiteChannelFactory().build("site", {}, {}),
        can_fail=False,
    ),
    "log": lambda: AdapterCase(
        name="log",
        factory=LogChannelFactory(),
        settings={"medium": "email"},
        env={},
        connect=lambda d: LogChannelFactory().build("log", {"medium": "email"}, {}),
        can_fail=False,
    ),
}


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("adapter", sorted(CASES))
async def test_builtin_adapter_conforms(adapter: str, check: str) -> None:
    await CHECKS[check](CASES[adapter]())


async def test_kit_catches_a_leaking_audience_adapter() -> None:
    """The kit is not a rubber stamp: an adapter that uploads raw emails fails it."""

    class Leaky:
        name = "leaky"
        kind = "paid"
        medium = "audience"

        def __init__(self, client: httpx.AsyncClient) -> None:
            self._client = client

        async def add(self, recipients: Any, *, batch_key: str) -> None:
            for start in range(0, len(recipients), 10_000):
                chunk = recipients[start : start + 10_000]
                await self._client.post("https://ads.test/", json=[r.email for r in chunk])

        async def remove(self, recipients: Any, *, batch_key: str) -> None:
            await self._client.post("https://ads.test/rm", json=[])

        async def send(self, delivery: Any) -> Any:
            await self.add([delivery.recipient], batch_key=delivery.idempotency_key)

        async def aclose(self) -> None:
            await self._client.aclose()

    case = CASES["meta_audience"]()
    case.connect = lambda d: Leaky(httpx.AsyncClient(transport=d.transport))  # type: ignore[assignment,return-value]
    with pytest.raises(ConformanceFailure, match="raw email"):
        await CHECKS["audience_batches_without_leaks"](case)

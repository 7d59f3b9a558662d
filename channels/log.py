"""The ``log`` adapter: writes what it would send. The default so a new install runs
without credentials; ``kind`` and ``medium`` come from the instance's settings so one type
can stand in for email, site and audience channels alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import structlog

from channels.base import ChannelKind, Delivery, Recipient, SendResult, SiteMessage


class LogChannel:
    """Logs deliveries (and audience changes) instead of calling a provider."""

    def __init__(self, name: str, kind: ChannelKind, medium: str) -> None:
        self.name = name
        self.kind: ChannelKind = kind
        self.medium = medium
        self.sent: list[Delivery] = []
        self._log = structlog.get_logger("parcours.channel.log").bind(channel=name)

    async def send(self, delivery: Delivery) -> SendResult:
        self.sent.append(delivery)
        self._log.info(
            "would send",
            journey=delivery.journey,
            step=delivery.step,
            customer=delivery.recipient.customer_id,
            key=delivery.idempotency_key,
            parts=sorted(delivery.content),
        )
        site = None
        if self.medium == "site":
            site = SiteMessage(
                slot=delivery.content.get("slot", "banner"), html=delivery.content.get("html", "")
            )
        return SendResult(provider_message_id=f"log-{delivery.idempotency_key}", site_message=site)

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self._log.info("would add to audience", count=len(recipients), batch=batch_key)

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        self._log.info("would remove from audience", count=len(recipients), batch=batch_key)

    async def aclose(self) -> None:
        return None


class LogChannelFactory:
    """Entry point ``log``."""

    type_name: ClassVar[str] = "log"
    kind: ClassVar[ChannelKind | None] = None
    medium: ClassVar[str | None] = None
    needs_template: ClassVar[bool] = False

    def build(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> LogChannel:
        kind = settings.get("kind", "owned")
        return LogChannel(
            name, "paid" if kind == "paid" else "owned", settings.get("medium", "email")
        )

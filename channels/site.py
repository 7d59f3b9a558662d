"""The ``site`` adapter: on-site messages.

Nothing leaves the process: the adapter turns rendered content into a ``SiteMessage``
(slot, html, expiry) and the orchestrator stores it for the website to fetch. The expiry
comes from the template's ``expires_at`` when the renderer computed one, else from its
``ttl`` counted from now, else from the channel's ``default_ttl`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from channels.base import (
    ChannelKind,
    ConfigurationError,
    Delivery,
    PermanentError,
    SendResult,
    SiteMessage,
)
from channels.durations import parse_duration
from channels.http import Clock, utcnow
from channels.settings import Settings


class SiteChannel:
    """Produces ``SiteMessage``s; the orchestrator persists them."""

    kind: ChannelKind = "owned"
    medium = "site"

    def __init__(
        self,
        name: str,
        *,
        default_slot: str | None = None,
        default_ttl: timedelta | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self._default_slot = default_slot
        self._default_ttl = default_ttl
        self._clock = clock

    def _expires_at(self, delivery: Delivery) -> datetime | None:
        content = delivery.content
        try:
            if content.get("expires_at"):
                return datetime.fromisoformat(content["expires_at"])
            if content.get("ttl"):
                return self._clock() + parse_duration(content["ttl"])
        except ValueError as exc:
            raise PermanentError(f"delivery {delivery.idempotency_key}: bad expiry: {exc}") from exc
        if self._default_ttl is not None:
            return self._clock() + self._default_ttl
        return None

    async def send(self, delivery: Delivery) -> SendResult:
        slot = delivery.content.get("slot") or self._default_slot
        html = delivery.content.get("html")
        if not slot or not html:
            raise PermanentError(
                f"delivery {delivery.idempotency_key}: a site message needs 'slot' and 'html'"
            )
        message = SiteMessage(slot=slot, html=html, expires_at=self._expires_at(delivery))
        return SendResult(
            provider_message_id=f"site:{delivery.idempotency_key}", site_message=message
        )

    async def aclose(self) -> None:
        return None


class SiteChannelFactory:
    """Entry point ``site``. Settings (all optional): ``default_slot``, ``default_ttl``."""

    type_name: ClassVar[str] = "site"
    kind: ClassVar[ChannelKind | None] = "owned"
    medium: ClassVar[str | None] = "site"
    needs_template: ClassVar[bool] = True

    def __init__(self, *, clock: Clock = utcnow) -> None:
        self._clock = clock

    def build(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> SiteChannel:
        s = Settings(name, self.type_name, settings, env)
        ttl_text = s.opt_text("default_ttl")
        try:
            ttl = parse_duration(ttl_text) if ttl_text else None
        except ValueError as exc:
            raise ConfigurationError(f"channel {name!r}: setting 'default_ttl': {exc}") from exc
        return SiteChannel(
            name, default_slot=s.opt_text("default_slot"), default_ttl=ttl, clock=self._clock
        )

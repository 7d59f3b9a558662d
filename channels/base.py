"""The channel protocol: the single seam between the orchestrator and the outside world.

An adapter receives a fully rendered :class:`Delivery` and either returns a
:class:`SendResult` or raises a typed error. It never sees a database session and never
imports the orchestrator, so a third-party package can ship an adapter that plugs in exactly
as the built-ins do (through the ``parcours.channels`` entry-point group).

Why these shapes:

* ``RetryableError`` / ``PermanentError`` are the only two outcomes the dispatcher has to
  understand; every provider's error codes are mapped onto them inside the adapter.
* The idempotency key travels with every attempt so providers that accept one can
  de-duplicate (an ``Idempotency-Key`` header, the SMTP ``Message-ID``...).
* Audience (paid) adapters add and remove *batches* of recipients, because the ad platforms
  take up to 10,000 rows a call, and only ever see hashed identifiers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

ChannelKind = Literal["owned", "paid"]

#: Reaction events each medium can produce. The journey validator uses these to tell a
#: designer that a wait or goal on an event "can never arrive".
MEDIUM_EVENTS: Mapping[str, frozenset[str]] = {
    "email": frozenset(
        {
            "email.delivered",
            "email.opened",
            "email.clicked",
            "email.bounced",
            "email.complained",
            "email.unsubscribed",
        }
    ),
    "site": frozenset({"site.viewed", "site.clicked", "site.dismissed"}),
    "audience": frozenset(),
    "webhook": frozenset(),
}


class ChannelError(Exception):
    """Base of the errors an adapter may raise from ``send``/``add``/``remove``."""


class RetryableError(ChannelError):
    """A failure worth retrying (timeouts, 429, 5xx). ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """A failure that retrying cannot fix (bad address, 4xx, rejected payload)."""


class ConfigurationError(ValueError):
    """A channel instance's settings are wrong; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a delivery is for. Raw identifiers stay here; paid adapters hash them."""

    customer_id: str
    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    timezone: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    #: Consent per channel/purpose as recorded for the customer, e.g.
    #: ``{"ad_user_data": True, "ad_personalization": False, "email": True}``.
    consent: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One rendered message for one recipient on one channel instance.

    ``content`` holds rendered parts keyed by name: ``subject``/``text``/``html`` for email,
    ``slot``/``html``/``expires_at`` for site messages, ``body`` for webhooks; audience
    adapters ignore it. ``unsubscribe_url`` is set for marketing email.
    """

    idempotency_key: str
    channel: str
    journey: str
    step: str
    recipient: Recipient
    content: Mapping[str, str] = field(default_factory=dict)
    unsubscribe_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteMessage:
    """An on-site message the orchestrator stores and the website fetches through the API."""

    slot: str
    html: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a provider told us. ``site_message`` is set only by the site adapter."""

    provider_message_id: str | None = None
    site_message: SiteMessage | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """A provider callback as the HTTP layer received it (raw body, lower-cased headers)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A provider callback turned into a parcours event (``email.opened``...)."""

    event: str
    provider_event_id: str
    occurred_at: datetime
    #: The idempotency key / message id of the delivery it concerns, when the provider
    #: echoes it back; the orchestrator matches it to the delivery row.
    delivery_key: str | None = None
    provider_message_id: str | None = None
    email: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Channel(Protocol):
    """What every adapter instance offers."""

    name: str
    kind: ChannelKind
    medium: str

    async def send(self, delivery: Delivery) -> SendResult:
        """Deliver one message; raise ``RetryableError`` or ``PermanentError`` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections and clients."""
        ...


@runtime_checkable
class AudienceChannel(Channel, Protocol):
    """A paid audience: customers are added and removed in batches of hashed identifiers."""

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        """Add recipients (chunked to the platform's limit); idempotent per ``batch_key``."""
        ...

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        """Remove recipients, e.g. when they convert or are erased."""
        ...


@runtime_checkable
class CallbackReceiver(Protocol):
    """Adapters that receive provider webhooks verify and parse them."""

    def verify(self, request: InboundRequest) -> bool:
        """True only when the request provably comes from the provider."""
        ...

    def parse(self, request: InboundRequest) -> list[ProviderEvent]:
        """Turn a verified request into parcours events; raise ``ValueError`` on bad input."""
        ...


class ChannelFactory(Protocol):
    """What the ``parcours.channels`` entry point names: builds instances from config.

    Class-level facts let the journey validator check journeys without building a channel
    (and without credentials): ``kind``, ``medium`` and whether a ``template`` is required.
    """

    type_name: ClassVar[str]
    kind: ClassVar[ChannelKind | None]
    medium: ClassVar[str | None]
    needs_template: ClassVar[bool]

    def build(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> Channel:
        """Build an instance; raise ``ConfigurationError`` naming the bad or missing setting."""
        ...

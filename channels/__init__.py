"""Channel adapters for parcours: the protocol (``channels.base``) and the built-ins."""

from channels.base import (
    AudienceChannel,
    CallbackReceiver,
    Channel,
    ChannelError,
    ChannelFactory,
    ChannelKind,
    ConfigurationError,
    Delivery,
    InboundRequest,
    PermanentError,
    ProviderEvent,
    Recipient,
    RetryableError,
    SendResult,
    SiteMessage,
)

__all__ = [
    "AudienceChannel",
    "CallbackReceiver",
    "Channel",
    "ChannelError",
    "ChannelFactory",
    "ChannelKind",
    "ConfigurationError",
    "Delivery",
    "InboundRequest",
    "PermanentError",
    "ProviderEvent",
    "Recipient",
    "RetryableError",
    "SendResult",
    "SiteMessage",
]

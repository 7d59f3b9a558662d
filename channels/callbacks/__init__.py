"""Receivers for email providers' webhooks: verify the sender, then turn events into
parcours events (``email.delivered``, ``email.opened``, ``email.clicked``,
``email.bounced``, ``email.complained``, ``email.unsubscribed``).

Each receiver implements ``channels.base.CallbackReceiver``. The orchestrator's HTTP layer
hands them the raw request; an unverified request must get 401 and change nothing, so
``verify`` never raises, it answers ``False``. :func:`build_receiver` builds one from a
channel's settings, including Mailgun, for which parcours has no sending adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.base import CallbackReceiver, ConfigurationError
from channels.callbacks.mailgun import MailgunWebhook
from channels.callbacks.postmark import PostmarkWebhook
from channels.callbacks.sendgrid import SendGridEventWebhook
from channels.http import Clock, utcnow
from channels.settings import Settings

__all__ = ["MailgunWebhook", "PostmarkWebhook", "SendGridEventWebhook", "build_receiver"]


def build_receiver(
    provider: str,
    name: str,
    settings: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    clock: Clock = utcnow,
) -> CallbackReceiver:
    """A receiver for ``provider`` (``sendgrid``, ``mailgun`` or ``postmark``)."""
    s = Settings(name, provider, settings, env)
    if provider == "sendgrid":
        return SendGridEventWebhook.from_settings(s, clock=clock)
    if provider == "mailgun":
        return MailgunWebhook.from_settings(s, clock=clock)
    if provider == "postmark":
        return PostmarkWebhook.from_settings(s)
    raise ConfigurationError(
        f"no webhook receiver for provider {provider!r}; known: mailgun, postmark, sendgrid"
    )

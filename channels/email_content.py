"""What every email adapter needs from a ``Delivery``, checked once.

SMTP, Postmark and SendGrid all need a recipient address, a subject and at least one body,
and all emit the same RFC 8058 one-click unsubscribe headers; keeping that here means the
three adapters cannot drift apart on what a sendable email is.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.base import Delivery, PermanentError

#: The metadata/custom-argument name under which the idempotency key travels to providers
#: and comes back in their webhooks.
DELIVERY_KEY_FIELD = "parcours_key"


@dataclass(frozen=True, slots=True)
class EmailParts:
    to: str
    subject: str
    text: str | None
    html: str | None


def email_parts(delivery: Delivery) -> EmailParts:
    """The parts of an email delivery, or ``PermanentError`` (retrying cannot add them)."""
    to = delivery.recipient.email
    if not to:
        raise PermanentError(f"delivery {delivery.idempotency_key}: recipient has no email")
    subject = delivery.content.get("subject")
    if not subject:
        raise PermanentError(f"delivery {delivery.idempotency_key}: content has no subject")
    text = delivery.content.get("text") or None
    html = delivery.content.get("html") or None
    if text is None and html is None:
        raise PermanentError(f"delivery {delivery.idempotency_key}: content has no text or html")
    return EmailParts(to=to, subject=subject, text=text, html=html)


def unsubscribe_headers(delivery: Delivery, mailto: str | None = None) -> dict[str, str]:
    """``List-Unsubscribe`` (https, then mailto when configured) and RFC 8058's
    ``List-Unsubscribe-Post``; empty when the delivery has no unsubscribe URL."""
    if not delivery.unsubscribe_url:
        return {}
    targets = [f"<{delivery.unsubscribe_url}>"]
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }

"""The cart-recovery email, end to end over a real SMTP connection: the engine enrolls the
customer, the dispatcher renders and tracks the message, the ``smtp`` adapter sends it to an
aiosmtpd server on loopback, and we read what a mailbox provider would receive."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser

from channels.smtp import message_id
from channels.tracking import verify_token
from tests.integration.conftest import (
    BASE_URL,
    OWNED_SITE,
    SIGNING_KEY,
    LiveFactory,
    LiveHarness,
    Mailbox,
)

CART_URL = "https://shop.example/cart/c-42?utm_source=parcours&step=1"


def _live(make_live: LiveFactory, smtp: Mailbox) -> LiveHarness:
    return make_live(
        channels={
            "email": {
                "type": "smtp",
                "host": smtp.host,
                "port": smtp.port,
                "security": "none",
                "from": "Shop <news@shop.example>",
                "unsubscribe_mailto": "unsubscribe@shop.example",
                "timeout": 5.0,
            },
            "site": OWNED_SITE,
            "retargeting": {"type": "log", "kind": "paid", "medium": "audience"},
        }
    )


def _abandon(h: LiveHarness) -> None:
    h.identify("ann", email="ann@example.nl", first_name="Ann", locale="nl")
    h.event("ann", "cart_abandoned", cart_id="c-42", total=59.9, item_count=3, cart_url=CART_URL)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag == "img" and found.get("src"):
            self.images.append(str(found["src"]))


def _parts(msg: EmailMessage) -> dict[str, str]:
    parts: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            assert isinstance(part, EmailMessage)
            parts[part.get_content_subtype()] = str(part.get_content())
    return parts


def test_cart_reminder_arrives_over_smtp_personalised_tracked_and_unsubscribable(
    make_live: LiveFactory, smtp_server: Mailbox
) -> None:
    h = _live(make_live, smtp_server)
    _abandon(h)
    assert h.dispatch() == 1

    row = h.deliveries("ann")[0]
    assert (row.channel, row.status) == ("email", "sent")
    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["ann@example.nl"]
    assert received.mail_from == "news@shop.example"
    msg = received.message

    # Headers: personalised subject, Message-ID from the idempotency key (what the row keeps
    # as provider id, so bounces match), RFC 8058 one-click unsubscribe.
    assert msg["Subject"] == "Je winkelmandje wacht op je, Ann"
    assert msg["To"] == "ann@example.nl"
    assert msg["Message-ID"] == message_id(row.idempotency_key, "shop.example")
    assert row.idempotency_key in msg["Message-ID"]
    assert row.provider_message_id == msg["Message-ID"]
    assert msg["X-Parcours-Delivery"] == row.idempotency_key
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    targets = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert targets[1] == "mailto:unsubscribe@shop.example?subject=unsubscribe"
    assert targets[0].startswith(f"{BASE_URL}/u/")
    now = h.clock.now()
    unsub = verify_token(SIGNING_KEY, targets[0].rsplit("/", 1)[1], now, kind="unsubscribe")
    assert (unsub.delivery_key, unsub.customer_id) == (row.idempotency_key, "ann")
    # A one-click unsubscribe link must outlive the email in the inbox for a long time.
    assert unsub.expires_at - now >= timedelta(days=300)

    # Body: multipart/alternative with a plain-text and an HTML part, both personalised.
    assert msg.get_content_type() == "multipart/alternative"
    parts = _parts(msg)
    assert set(parts) == {"plain", "html"}
    assert "Hallo Ann," in parts["plain"] and "3 artikelen" in parts["plain"]
    assert CART_URL in parts["plain"]  # text links cannot be rewritten: left as written
    assert "Hallo Ann," in parts["html"]

    # Every HTML link goes through the click endpoint; each token verifies to the URL the
    # designer wrote, for this delivery and customer, so the redirect cannot be abused.
    links = _Links()
    links.feed(parts["html"])
    assert links.hrefs, "the template has a link"
    for href in links.hrefs:
        assert href.startswith(f"{BASE_URL}/t/c/"), href
        click = verify_token(SIGNING_KEY, href.rsplit("/", 1)[1], now, kind="click")
        assert click.url == CART_URL
        assert (click.delivery_key, click.customer_id) == (row.idempotency_key, "ann")
    assert CART_URL not in parts["html"]
    # ... and the open pixel.
    pixels = [src for src in links.images if src.startswith(f"{BASE_URL}/t/o/")]
    assert len(pixels) == 1
    opened = verify_token(SIGNING_KEY, pixels[0].rsplit("/", 1)[1], now, kind="open")
    assert opened.delivery_key == row.idempotency_key


def test_a_4xx_from_the_smtp_server_is_retried_with_the_same_message_id(
    make_live: LiveFactory, smtp_server: Mailbox
) -> None:
    h = _live(make_live, smtp_server)
    smtp_server.refuse.append("451 4.3.0 mailbox busy, try again later")
    _abandon(h)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("pending", 1)
    assert "451" in row.last_error and not smtp_server.messages
    h.clock.set(row.next_attempt_at)
    assert h.dispatch() == 1
    row = h.deliveries("ann")[0]
    assert (row.status, row.attempts) == ("sent", 2)
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [row.provider_message_id]


def test_a_5xx_rejection_ends_the_delivery_dead_with_the_servers_reason(
    make_live: LiveFactory, smtp_server: Mailbox
) -> None:
    h = _live(make_live, smtp_server)
    smtp_server.refuse.append("550 5.1.1 no such user here")
    _abandon(h)
    h.dispatch()
    row = h.deliveries("ann")[0]
    assert row.status == "dead"
    assert "550" in row.last_error and "no such user" in row.last_error

"""The smtp adapter against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from channels.base import ConfigurationError, Delivery, PermanentError, Recipient, RetryableError
from channels.smtp import SmtpChannelFactory, message_id, tls_options
from channels.tracking import TrackingConfig, apply_tracking, verify_token

KEY = b"tracking-key-0123456789abcdef"
NOW = datetime(2025, 5, 1, tzinfo=UTC)


class Inbox:
    """An aiosmtpd handler that keeps messages and can refuse recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    def text(value: str | bytes) -> str:
        return value.decode() if isinstance(value, bytes) else value

    ok = isinstance(data, LoginPassword) and (text(data.login), text(data.password)) == (
        "app",
        "pw",
    )
    return AuthResult(success=ok)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def settings(port: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from": "Shop <news@shop.example>",
        "security": "none",
        "timeout": 5,
        "unsubscribe_mailto": "unsubscribe@shop.example",
    }
    base.update(extra)
    return base


def tracked_delivery() -> Delivery:
    tracking = TrackingConfig(base_url="https://t.shop.example", key=KEY)
    rendered = {
        "subject": "Je winkelmand wacht",
        "text": "Hallo Anna, bekijk https://shop.example/cart",
        "html": '<html><body><p>Hallo Anna</p><a href="https://shop.example/cart">cart</a>'
        "</body></html>",
    }
    tracked = apply_tracking(
        rendered, tracking, delivery_key="enr-1:mail:1", customer_id="c-1", now=NOW
    )
    return Delivery(
        idempotency_key="enr-1:mail:1",
        channel="mail",
        journey="cart",
        step="mail",
        recipient=Recipient(customer_id="c-1", email="anna@example.com"),
        content=tracked.content,
        unsubscribe_url=tracked.unsubscribe_url,
    )


async def test_delivers_multipart_with_headers_tracking_and_unsubscribe(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    channel = SmtpChannelFactory().build("mail", settings(port), {})
    delivery = tracked_delivery()
    result = await channel.send(delivery)
    await channel.aclose()

    (msg,) = inbox.messages
    assert inbox.envelopes[0].rcpt_tos == ["anna@example.com"]
    assert inbox.envelopes[0].mail_from == "news@shop.example"
    assert msg["Subject"] == "Je winkelmand wacht"
    assert msg["To"] == "anna@example.com"
    assert msg["Message-ID"] == message_id("enr-1:mail:1", "shop.example")
    assert msg["Message-ID"] == "<enr-1=3Amail=3A1@shop.example>"
    assert result.provider_message_id == msg["Message-ID"]
    assert msg["List-Unsubscribe"] == (
        f"<{delivery.unsubscribe_url}>, <mailto:unsubscribe@shop.example?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "Hallo Anna" in text.get_content()
    html_text = html.get_content()
    (link,) = re.findall(r'href="([^"]+)"', html_text)
    assert link.startswith("https://t.shop.example/t/c/")
    assert verify_token(KEY, link.rsplit("/", 1)[1], NOW).url == "https://shop.example/cart"
    pixel = re.search(r'<img src="(https://t\.shop\.example/t/o/[^"]+)"', html_text)
    assert pixel is not None
    assert verify_token(KEY, pixel.group(1).rsplit("/", 1)[1], NOW, kind="open")


async def test_same_message_id_on_retry(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    channel = SmtpChannelFactory().build("mail", settings(port), {})
    await channel.send(tracked_delivery())
    await channel.send(tracked_delivery())
    assert inbox.messages[0]["Message-ID"] == inbox.messages[1]["Message-ID"]


async def test_no_unsubscribe_headers_without_url(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    channel = SmtpChannelFactory().build("mail", settings(port), {})
    plain = Delivery(
        idempotency_key="k",
        channel="mail",
        journey="j",
        step="s",
        recipient=Recipient(customer_id="c", email="bob@example.com"),
        content={"subject": "Receipt", "text": "Thanks"},
    )
    await channel.send(plain)
    (msg,) = inbox.messages
    assert msg["List-Unsubscribe"] is None
    assert msg.get_content_type() == "text/plain"


async def test_smtp_4xx_is_retryable(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    inbox.rcpt_reply = "451 4.7.1 Greylisted, try again later"
    channel = SmtpChannelFactory().build("mail", settings(port), {})
    with pytest.raises(RetryableError, match="451"):
        await channel.send(tracked_delivery())


async def test_smtp_5xx_is_permanent(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    inbox.rcpt_reply = "550 5.1.1 No such user"
    channel = SmtpChannelFactory().build("mail", settings(port), {})
    with pytest.raises(PermanentError, match="No such user"):
        await channel.send(tracked_delivery())


async def test_connection_refused_is_retryable() -> None:
    channel = SmtpChannelFactory().build("mail", settings(free_port()), {})
    with pytest.raises(RetryableError):
        await channel.send(tracked_delivery())


async def test_auth(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    good = settings(port, username="app", password_env="SMTP_PW")
    channel = SmtpChannelFactory().build("mail", good, {"SMTP_PW": "pw"})
    await channel.send(tracked_delivery())
    assert len(inbox.messages) == 1


async def test_authentication_failure_is_permanent() -> None:
    async def refuse(message: Any, **kwargs: Any) -> None:
        assert kwargs["username"] == "app" and kwargs["password"] == "wrong"
        raise aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication credentials invalid")

    s = settings(1025, username="app", password_env="SMTP_PW")
    channel = SmtpChannelFactory(smtp_send=refuse).build("mail", s, {"SMTP_PW": "wrong"})
    with pytest.raises(PermanentError, match="535"):
        await channel.send(tracked_delivery())


def test_tls_options() -> None:
    assert tls_options("tls") == {"use_tls": True, "start_tls": False}
    assert tls_options("starttls") == {"use_tls": False, "start_tls": True}
    assert tls_options("none") == {"use_tls": False, "start_tls": False}


def test_default_ports_and_configuration_errors() -> None:
    factory = SmtpChannelFactory()
    channel = factory.build("m", {"host": "h", "from": "a@b.example", "security": "tls"}, {})
    assert channel._port == 465
    with pytest.raises(ConfigurationError, match="security"):
        factory.build("m", {"host": "h", "from": "a@b.example", "security": "ssl"}, {})
    with pytest.raises(ConfigurationError, match="password_env"):
        factory.build("m", {"host": "h", "from": "a@b.example", "username": "u"}, {})
    with pytest.raises(ConfigurationError, match="SMTP_PW"):
        factory.build("m", {"host": "h", "from": "a@b.example", "password_env": "SMTP_PW"}, {})


def test_message_id_escaping_is_injective() -> None:
    assert message_id("a.b-c_1", "x.example") == "<a.b-c_1@x.example>"
    assert message_id("a:b", "x") != message_id("a=3Ab", "x")
    assert message_id("a b@c", "x") == "<a=20b=40c@x>"

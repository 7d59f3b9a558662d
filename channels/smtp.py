"""The ``smtp`` adapter: multipart email over SMTP with aiosmtplib.

The ``Message-ID`` is derived from the delivery's idempotency key, so every retry of one
delivery carries the same id and receiving systems (and our own bounce handling) can
de-duplicate. SMTP reply codes map the way the RFCs mean them: 4xx transient (retry),
5xx permanent; a refused connection or a timeout is retryable.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, ClassVar

import aiosmtplib

from channels.base import (
    ChannelKind,
    ConfigurationError,
    Delivery,
    PermanentError,
    RetryableError,
    SendResult,
)
from channels.email_content import email_parts, unsubscribe_headers
from channels.settings import Settings

SmtpSend = Callable[..., Awaitable[Any]]
Security = str  # "starttls" | "tls" | "none"

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/?^_`{|}~.]")


def message_id(idempotency_key: str, domain: str) -> str:
    """``<key@domain>`` with characters not allowed in a msg-id escaped as ``=XX``.

    The escape is injective (``=`` itself is escaped), so two keys never share an id.
    """
    safe = "".join(
        ch if ch != "=" and _ATEXT.fullmatch(ch) else "".join(f"={b:02X}" for b in ch.encode())
        for ch in idempotency_key
    ).strip(".")
    return f"<{safe}@{domain}>"


def tls_options(security: Security) -> dict[str, bool | None]:
    """aiosmtplib's ``use_tls``/``start_tls`` for our ``security`` setting."""
    if security == "tls":
        return {"use_tls": True, "start_tls": False}
    if security == "starttls":
        return {"use_tls": False, "start_tls": True}
    return {"use_tls": False, "start_tls": False}


class SmtpChannel:
    """Sends each delivery as one multipart/alternative message."""

    kind: ChannelKind = "owned"
    medium = "email"

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        domain: str,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        validate_certs: bool = True,
        reply_to: str | None = None,
        unsubscribe_mailto: str | None = None,
        smtp_send: SmtpSend = aiosmtplib.send,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._sender = sender
        self._domain = domain
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout
        self._validate_certs = validate_certs
        self._reply_to = reply_to
        self._unsubscribe_mailto = unsubscribe_mailto
        self._smtp_send = smtp_send

    def build_message(self, delivery: Delivery) -> EmailMessage:
        """The MIME message for a delivery (public so previews and tests can inspect it)."""
        parts = email_parts(delivery)
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = parts.to
        msg["Subject"] = parts.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id(delivery.idempotency_key, self._domain)
        if self._reply_to:
            msg["Reply-To"] = self._reply_to
        for header, value in unsubscribe_headers(delivery, self._unsubscribe_mailto).items():
            msg[header] = value
        msg["X-Parcours-Delivery"] = delivery.idempotency_key
        if parts.text is not None and parts.html is not None:
            msg.set_content(parts.text)
            msg.add_alternative(parts.html, subtype="html")
        elif parts.html is not None:
            msg.set_content(parts.html, subtype="html")
        else:
            msg.set_content(parts.text or "")
        return msg

    async def send(self, delivery: Delivery) -> SendResult:
        msg = self.build_message(delivery)
        try:
            await self._smtp_send(
                msg,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                timeout=self._timeout,
                validate_certs=self._validate_certs,
                **tls_options(self._security),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused else 550
            text = refused.message if refused else str(exc)
            raise _by_code(code, f"recipient refused: {text}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryableError(f"smtp {self._host}:{self._port}: {exc}") from exc
        return SendResult(provider_message_id=str(msg["Message-ID"]))

    async def aclose(self) -> None:
        """Each send opens its own connection; nothing is held between sends."""
        return None


def _by_code(code: int, text: str) -> RetryableError | PermanentError:
    message = f"smtp {code}: {text}"
    if 400 <= code < 500:
        return RetryableError(message)
    return PermanentError(message)


class SmtpChannelFactory:
    """Entry point ``smtp``.

    Settings: ``host``, ``port`` (default 587, 465 for tls, 25 for none), ``from``,
    ``security`` (``starttls``/``tls``/``none``), ``username`` and ``password_env``,
    ``message_id_domain`` (default: the From domain), ``reply_to``,
    ``unsubscribe_mailto``, ``timeout``, ``validate_certs``.
    """

    type_name: ClassVar[str] = "smtp"
    kind: ClassVar[ChannelKind | None] = "owned"
    medium: ClassVar[str | None] = "email"
    needs_template: ClassVar[bool] = True

    def __init__(self, *, smtp_send: SmtpSend | None = None) -> None:
        self._smtp_send = smtp_send

    def build(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> SmtpChannel:
        s = Settings(name, self.type_name, settings, env)
        host = s.text("host", example='host = "smtp.example.com"')
        sender = s.text("from", example='from = "Shop <news@shop.example>"')
        address = parseaddr(sender)[1]
        if "@" not in address:
            raise _config(name, "from", f"{sender!r} has no email address")
        security = s.choice("security", ("starttls", "tls", "none"), "starttls")
        port = s.integer("port", {"tls": 465, "starttls": 587, "none": 25}[security])
        username = s.opt_text("username")
        password = s.opt_secret("password_env")
        if username and password is None:
            raise _config(name, "password_env", "is required when username is set")
        domain = s.opt_text("message_id_domain") or Address(addr_spec=address).domain
        return SmtpChannel(
            name,
            host=host,
            port=port,
            sender=sender,
            domain=domain,
            security=security,
            username=username,
            password=password,
            timeout=s.number("timeout", 30.0),
            validate_certs=s.boolean("validate_certs", True),
            reply_to=s.opt_text("reply_to"),
            unsubscribe_mailto=s.opt_text("unsubscribe_mailto"),
            smtp_send=self._smtp_send or aiosmtplib.send,
        )


def _config(name: str, key: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"channel {name!r} (type 'smtp'): setting {key!r} {problem}")

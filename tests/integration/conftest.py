"""End-to-end fixtures: a runtime on a virtual clock whose channels are the REAL adapters,
built through the entry-point registry, talking to servers on 127.0.0.1.

The engine side is the same ``Harness`` the orchestrator tests use; what differs is that
nothing is replaced by the ``log`` channel: an email really crosses an SMTP connection, a
webhook really crosses HTTP, and ad-platform requests are recorded at httpx's transport seam
exactly as the provider would receive them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.base import Channel
from channels.registry import factory
from orchestrator.clock import VirtualClock
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.runtime import build_runtime
from tests.conftest import settings_for
from tests.orchestrator.conftest import Harness

SIGNING_KEY = "integration-signing-key-0123456789"
BASE_URL = "https://track.shop.example"

#: The cart-recovery example's channel instances, as an operator would configure them with
#: real adapters; tests replace ``email`` or ``retargeting`` as they need.
OWNED_SITE = {"type": "site", "default_ttl": "3d"}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveHarness(Harness):
    """A ``Harness`` that dispatches on one long-lived event loop, so adapters holding an
    ``httpx.AsyncClient`` keep a valid connection pool across dispatch rounds (as in the
    daemon, where the loop lives as long as the process)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runner = asyncio.Runner()

    def dispatch(self) -> int:
        return self.runner.run(self.dispatcher.run_until_idle())

    def close(self) -> None:
        self.runner.run(self.rt.aclose())
        self.runner.close()


LiveFactory = Callable[..., LiveHarness]


@pytest.fixture
def make_live(database_url: str) -> Iterator[LiveFactory]:
    """``make_live(channels={name: settings}, env={...}, adapters={type: factory}, ...)``.

    Every channel is built by its registered factory (or the factory object given in
    ``adapters`` for its type, e.g. one constructed with ``transport=``), from the same
    settings the catalog validates the journeys against.
    """
    made: list[LiveHarness] = []

    def make(
        *,
        channels: Mapping[str, Mapping[str, Any]],
        env: Mapping[str, str] | None = None,
        adapters: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> LiveHarness:
        overrides.setdefault("http", {"base_url": BASE_URL})
        overrides.setdefault("keys", {"signing_key": SIGNING_KEY})
        settings = settings_for(
            database_url, channels={k: dict(v) for k, v in channels.items()}, **overrides
        )
        db = open_engine(settings.database_url)
        upgrade(db)
        clock = VirtualClock()
        built: dict[str, Channel] = {}
        for name, conf in settings.channels.items():
            type_name = str(conf["type"])
            fac = (adapters or {}).get(type_name) or factory(type_name)
            built[name] = fac.build(name, conf, dict(env or {}))
        rt = build_runtime(settings, clock=clock, db=db, channels=built)
        h = LiveHarness(rt, clock)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# -- a real SMTP server on loopback ---------------------------------------------------------


@dataclass
class Received:
    """One message as the SMTP server got it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Mailbox:
    """What an aiosmtpd ``Controller`` on 127.0.0.1 received."""

    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    #: Replies to give instead of accepting, one per message, e.g. ``"451 try later"``.
    refuse: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return self.refuse.pop(0)
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        self.messages.append(
            Received(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], raw)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    port = free_port()
    box = Mailbox("127.0.0.1", port)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()

"""A third-party adapter plugs in through the entry-point group alone: a module and a
``*.dist-info/entry_points.txt`` on sys.path, no parcours code touched."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels import registry
from channels.base import Channel, ConfigurationError, Delivery, Recipient, SendResult
from channels.testing import CHECKS, AdapterCase

BUILTINS = {
    "log",
    "smtp",
    "postmark",
    "sendgrid",
    "site",
    "meta_audience",
    "google_customer_match",
    "webhook",
}

MODULE = '''
"""An SMS adapter as a third party would ship it."""
from typing import ClassVar

from channels.base import ConfigurationError, SendResult


class SmsChannel:
    kind = "owned"
    medium = "email"  # no "sms" medium in parcours yet; this adapter stands in for email

    def __init__(self, name, sender):
        self.name = name
        self.sender = sender
        self.outbox = []

    async def send(self, delivery):
        self.outbox.append((delivery.recipient.phone, delivery.content.get("text")))
        return SendResult(provider_message_id=f"sms-{delivery.idempotency_key}")

    async def aclose(self):
        return None


class SmsFactory:
    type_name: ClassVar[str] = "thirdparty"
    kind: ClassVar[str] = "owned"
    medium: ClassVar[str] = "email"
    needs_template: ClassVar[bool] = True

    def build(self, name, settings, env):
        if not settings.get("sender"):
            raise ConfigurationError(f"channel {name!r}: setting 'sender' is missing")
        return SmsChannel(name, settings["sender"])
'''


@pytest.fixture
def thirdparty_on_path(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "parcours_sms_demo.py").write_text(MODULE)
    dist = tmp_path / "parcours_sms_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: parcours-sms-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [parcours.channels]
            thirdparty = parcours_sms_demo:SmsFactory
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    registry.factories.cache_clear()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("parcours_sms_demo", None)
        registry.factories.cache_clear()


def test_builtins_are_registered_through_entry_points() -> None:
    registry.factories.cache_clear()
    assert set(registry.factories()) >= BUILTINS
    spec = registry.describe("ads", {"type": "meta_audience"})
    assert (spec.kind, spec.medium, spec.needs_template) == ("paid", "audience", False)
    hook = registry.describe("crm", {"type": "webhook", "kind": "paid"})
    assert (hook.kind, hook.medium) == ("paid", "webhook")


async def test_thirdparty_adapter_builds_and_sends(thirdparty_on_path: Path) -> None:
    assert "thirdparty" not in BUILTINS
    factory = registry.factory("thirdparty")
    assert registry.describe("sms", {"type": "thirdparty"}).needs_template is True
    channel = factory.build("sms", {"sender": "SHOP"}, {})
    assert isinstance(channel, Channel)
    delivery = Delivery(
        idempotency_key="enr-1:sms:1",
        channel="sms",
        journey="j",
        step="s",
        recipient=Recipient(customer_id="c", phone="+31612345678"),
        content={"text": "Your cart is waiting"},
    )
    result = await channel.send(delivery)
    assert result == SendResult(provider_message_id="sms-enr-1:sms:1")
    assert channel.outbox == [("+31612345678", "Your cart is waiting")]  # type: ignore[attr-defined]


async def test_thirdparty_adapter_runs_the_conformance_kit(thirdparty_on_path: Path) -> None:
    factory = registry.factory("thirdparty")
    case = AdapterCase(
        name="sms",
        factory=factory,
        settings={"sender": "SHOP"},
        env={},
        connect=lambda double: factory.build("sms", {"sender": "SHOP"}, {}),
        required_settings=("sender",),
        can_fail=False,
    )
    for check in CHECKS.values():
        await check(case)


def test_unknown_type_lists_installed() -> None:
    registry.factories.cache_clear()
    with pytest.raises(ConfigurationError, match=r"installed types: .*smtp"):
        registry.factory("carrier-pigeon")

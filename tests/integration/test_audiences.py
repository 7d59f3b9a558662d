"""Owned channels first, paid only on silence, out again on conversion: the cart-recovery
example end to end with the real ad-platform adapters.

The email goes through the real ``smtp`` adapter to aiosmtpd, the banner through the real
``site`` adapter, and the paid audience through the real ``meta_audience`` or
``google_customer_match`` adapter, whose requests are recorded at httpx's transport seam
exactly as Meta's Graph API or Google's Data Manager API would receive them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from channels.google_customer_match import GoogleCustomerMatchChannelFactory
from channels.meta_audience import MetaAudienceChannelFactory
from channels.testing.double import Exchange, ProviderDouble
from channels.tracking import verify_token
from tests.integration.conftest import (
    OWNED_SITE,
    SIGNING_KEY,
    LiveFactory,
    LiveHarness,
    Mailbox,
)

ANN = {
    "id": "cust-ann",
    "email": "  Ann.Peeters@Example.NL ",
    "phone": "+32 470 12 34 56",
    "first_name": "Annemieke",
}
BOB = {
    "id": "cust-bob",
    "email": "bob.jacobs@example.nl",
    "phone": "+31 6 1234 5678",
    "first_name": "Bartholomeus",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Platform:
    """How to configure one ad platform and read its requests back."""

    name: str
    settings: dict[str, Any]
    env: dict[str, str]
    factory: Callable[[ProviderDouble], Any]
    #: "add" / "remove" for one request
    operation: Callable[[Exchange], str]
    #: the email hashes a request carries
    email_hashes: Callable[[Exchange], list[str]]


def _meta_hashes(x: Exchange) -> list[str]:
    payload = x.json()["payload"]
    schema = payload["schema"]
    column = schema.index("EMAIL_SHA256") if isinstance(schema, list) else 0
    return [row[column] for row in payload["data"] if row[column]]


def _google_hashes(x: Exchange) -> list[str]:
    members = x.json()["audienceMembers"]
    return [
        ident["emailAddress"]
        for m in members
        for ident in m["userData"]["userIdentifiers"]
        if "emailAddress" in ident
    ]


META = Platform(
    name="meta",
    settings={
        "type": "meta_audience",
        "audience_id": "23850000000000001",
        "access_token_env": "META_TOKEN",
    },
    env={"META_TOKEN": "meta-test-token"},
    factory=lambda double: MetaAudienceChannelFactory(transport=double.transport),
    operation=lambda x: {"POST": "add", "DELETE": "remove"}[x.method],
    email_hashes=_meta_hashes,
)
GOOGLE = Platform(
    name="google",
    settings={
        "type": "google_customer_match",
        "operating_account_id": "123-456-7890",
        "audience_id": "9876543210",
        "access_token_env": "GOOGLE_TOKEN",
    },
    env={"GOOGLE_TOKEN": "google-test-token"},
    factory=lambda double: GoogleCustomerMatchChannelFactory(transport=double.transport),
    operation=lambda x: {"ingest": "add", "remove": "remove"}[x.url.rsplit(":", 1)[1]],
    email_hashes=_google_hashes,
)


def _live(
    make_live: LiveFactory, smtp: Mailbox, platform: Platform, double: ProviderDouble
) -> LiveHarness:
    return make_live(
        channels={
            "email": {
                "type": "smtp",
                "host": smtp.host,
                "port": smtp.port,
                "security": "none",
                "from": "Shop <news@shop.example>",
            },
            "site": OWNED_SITE,
            "retargeting": platform.settings,
        },
        env=platform.env,
        adapters={platform.settings["type"]: platform.factory(double)},
    )


def _clicked_delivery_key(smtp: Mailbox, to: str, now: datetime) -> str:
    """What the click endpoint learns from the tracked link in the email ``to`` received."""
    received = next(m for m in smtp.messages if m.rcpt_tos == [to])
    body = received.message.get_body(("html",))
    assert body is not None
    token = re.search(r'/t/c/([^"]+)"', body.get_content())
    assert token is not None
    return verify_token(SIGNING_KEY, token.group(1), now, kind="click").delivery_key


@pytest.mark.parametrize("platform", [META, GOOGLE], ids=lambda p: p.name)
def test_silent_customer_reaches_the_paid_audience_and_leaves_it_on_order_reactor_never_does(
    make_live: LiveFactory, smtp_server: Mailbox, platform: Platform
) -> None:
    double = ProviderDouble()
    h = _live(make_live, smtp_server, platform, double)
    for c in (ANN, BOB):
        h.identify(c["id"], email=c["email"], phone=c["phone"], first_name=c["first_name"])
        h.event(c["id"], "cart_abandoned", cart_id=f"cart-{c['id']}", total=42.0)
    h.dispatch()
    assert len(smtp_server.messages) == 2  # owned channel first, for both

    # Bob clicks the link in his email: the click carries the delivery key of that message.
    key = _clicked_delivery_key(smtp_server, BOB["email"], h.clock.now())
    assert key == h.deliveries(BOB["id"])[0].idempotency_key
    h.event(BOB["id"], "email.clicked", delivery_key=key)
    assert h.one(BOB["id"]).state == "engaged"

    # Two days of silence from Ann: the on-site banner, still nothing for the ad platform.
    h.advance(days=2)
    h.dispatch()
    assert h.one(ANN["id"]).state == "wait_site"
    assert double.exchanges == []

    # Three more days: only now is Ann added to the paid audience, as a hash.
    h.advance(days=3)
    assert h.one(ANN["id"]).state == "in_audience"
    h.dispatch()
    [add] = double.exchanges
    assert platform.operation(add) == "add"
    [token] = platform.env.values()
    assert add.headers["authorization"] == f"Bearer {token}"  # from the environment
    ann_hash = sha("ann.peeters@example.nl")
    assert platform.email_hashes(add) == [ann_hash]
    retarget = next(d for d in h.deliveries(ANN["id"]) if d.channel == "retargeting")
    assert (retarget.operation, retarget.status) == ("audience_add", "sent")

    # Ann orders: the journey ends converted and she is taken out of the audience.
    h.event(ANN["id"], "order_completed", order_id="o-1", total=42.0)
    enr = h.one(ANN["id"])
    assert (enr.status, enr.exit_reason) == ("ended", "converted")
    h.dispatch()
    add_again, remove = double.exchanges[0], double.exchanges[-1]
    assert add_again is add and len(double.exchanges) == 2
    assert platform.operation(remove) == "remove"
    assert platform.email_hashes(remove) == [ann_hash]
    removal = h.deliveries(ANN["id"])[-1]
    assert (removal.operation, removal.status) == ("audience_remove", "sent")

    # Bob's journey runs out without any paid step; nothing about him ever left.
    h.advance(days=30)
    h.dispatch()
    assert (h.one(BOB["id"]).status, h.one(BOB["id"]).exit_reason) == ("ended", "reacted")
    assert len(double.exchanges) == 2
    bob_hashes = {sha(BOB["email"]), sha("bob.jacobs@example.nl")}
    for x in double.exchanges:
        assert not bob_hashes & set(platform.email_hashes(x))

    # Only hashes ever went out: no address, phone number, name or customer id, in any form.
    for x in double.exchanges:
        sent = x.text().lower()
        for c in (ANN, BOB):
            phone = c["phone"].replace(" ", "")
            for raw in (c["email"].strip(), c["id"], c["first_name"], phone, phone[1:]):
                assert raw.lower() not in sent, (raw, x.text())
        assert "example.nl" not in sent

"""Constants and helpers for the HTTP API tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from channels.base import Delivery
from channels.log import LogChannel
from orchestrator.clock import VirtualClock
from orchestrator.config import Settings, load_settings
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.dispatcher import Dispatcher
from orchestrator.runtime import Runtime, build_channels, build_runtime

ROOT = Path(__file__).resolve().parents[3]
WRITE_KEY = "test-write-key"
SITE_KEY = "test-site-key"
ADMIN_KEY = "test-admin-key"
SIGNING_KEY = "test-signing-key-0123456789abcdef"
MAILGUN_KEY = "key-mailgun-test-0123456789"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "pm-hook-secret"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ENV = {"MG_SIGNING": MAILGUN_KEY, "PM_HOOK": POSTMARK_PASSWORD}


def make_settings(database: Path | str, sendgrid_public: str, **overrides: Any) -> Settings:
    """Settings for the API tests; ``database`` is a SQLite file or a database URL."""
    channels = {
        "email": {
            "type": "log",
            "kind": "owned",
            "medium": "email",
            "webhook_provider": "sendgrid",
            "webhook_public_key": sendgrid_public,
        },
        "email_pm": {
            "type": "log",
            "kind": "owned",
            "medium": "email",
            "webhook_provider": "postmark",
            "webhook_username": POSTMARK_USER,
            "webhook_password_env": "PM_HOOK",
        },
        "email_mg": {
            "type": "log",
            "kind": "owned",
            "medium": "email",
            "webhook_provider": "mailgun",
            "webhook_signing_key_env": "MG_SIGNING",
        },
        "site": {"type": "log", "kind": "owned", "medium": "site"},
        "retargeting": {"type": "log", "kind": "paid", "medium": "audience"},
    }
    values: dict[str, Any] = {
        "database_url": database if isinstance(database, str) else f"sqlite:///{database}",
        "journeys": [str(ROOT / "journeys/examples")],
        "templates": str(ROOT / "journeys/examples/templates"),
        "keys": {
            "write_keys": [WRITE_KEY, "second-write-key"],
            "site_keys": [SITE_KEY],
            "admin_keys": [ADMIN_KEY],
            "signing_key": SIGNING_KEY,
        },
        "http": {
            "base_url": "http://testserver",
            "max_body_bytes": 64 * 1024,
            "max_batch_events": 100,
        },
        "channels": channels,
    }
    values.update(overrides)
    return load_settings(ROOT / "config/parcours.toml", **values)


def make_runtime(settings: Settings, clock: VirtualClock) -> Runtime:
    db = open_engine(settings.database_url)
    channels = build_channels(settings, env=ENV)
    return build_runtime(settings, clock=clock, db=db, check_schema=False, channels=channels)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


WRITE = basic(WRITE_KEY)
SITE = {"X-Site-Key": SITE_KEY}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def dispatch(runtime: Runtime) -> int:
    """Run the real dispatcher over the outbox until it is empty."""
    dispatcher = Dispatcher(
        runtime.db,
        runtime.clock,
        runtime.channels,
        runtime.templates,
        runtime.tracking,
        runtime.settings.dispatch,
    )
    return asyncio.run(dispatcher.run_until_idle())


def sent(runtime: Runtime, channel: str = "email") -> list[Delivery]:
    ch = runtime.channels[channel]
    assert isinstance(ch, LogChannel)
    return ch.sent


def tracking_urls(delivery: Delivery, kind: str) -> list[str]:
    """URLs of ``kind`` (``t/c``, ``t/o``, ``u``) in a sent email's HTML and headers."""
    html = delivery.content.get("html", "")
    found = re.findall(r"(http://testserver/(?:t/c|t/o|u)/[A-Za-z0-9_\-.]+)", html)
    if delivery.unsubscribe_url:
        found.append(delivery.unsubscribe_url)
    return [u for u in found if u.startswith(f"http://testserver/{kind}/")]


def path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


def rows(runtime: Runtime, table: Any, *where: Any) -> list[Any]:
    with runtime.db.connect() as conn:
        return list(conn.execute(select(table).where(*where)).all())


def events_named(runtime: Runtime, name: str) -> list[Any]:
    return rows(runtime, t.events, t.events.c.name == name)


def cart_abandoned(user: str, cart: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "userId": user,
        "event": "cart_abandoned",
        "messageId": f"m-{user}-{cart}",
        "properties": {
            "cart_id": cart,
            "total": 59.9,
            "cart_url": "https://shop.example/cart/" + cart,
        },
        **extra,
    }


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {"userId": user, "messageId": f"id-{user}", "traits": traits}


def post_events(client: Any, *calls: dict[str, Any]) -> None:
    """Send calls as one Segment batch (each needs its ``type``) and require a 200."""
    r = client.post("/v1/batch", json={"batch": list(calls)}, headers=WRITE)
    assert r.status_code == 200, r.text


def email_sent_to(client: Any, runtime: Runtime, user: str = "u1") -> Delivery:
    """Identify ``user``, abandon a cart, run the engine and the dispatcher: the customer
    waits in ``wait_email`` and the reminder email (with its tracking links) is returned."""
    post_events(
        client,
        {"type": "identify", **identify(user, email=f"{user}@example.com", first_name="Anna")},
        {"type": "track", **cart_abandoned(user)},
    )
    runtime.engine.run_until_idle()
    dispatch(runtime)
    mine = [d for d in sent(runtime) if d.recipient.customer_id == user]
    assert len(mine) == 1
    return mine[-1]


def enrollment(runtime: Runtime, user: str = "u1") -> Any:
    [row] = rows(runtime, t.enrollments, t.enrollments.c.customer_id == user)
    return row


def transitions(runtime: Runtime, user: str = "u1") -> list[tuple[str | None, str, str]]:
    with runtime.db.connect() as conn:
        found = conn.execute(
            select(t.history).where(t.history.c.customer_id == user).order_by(t.history.c.id)
        ).all()
    return [(r.from_state, r.to_state, r.trigger) for r in found]


def add_message(runtime: Runtime, key: str, customer: str = "u1", **values: Any) -> None:
    """A live on-site message for ``customer``, as the dispatcher writes one."""
    row = {
        "delivery_key": key,
        "customer_id": customer,
        "channel": "site",
        "slot": "banner",
        "html": f"<p>{key}</p>",
        "created_at": runtime.clock.now(),
    } | values
    with runtime.db.begin() as conn:
        conn.execute(t.site_messages.insert(), [row])

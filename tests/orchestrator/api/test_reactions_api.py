"""Open pixel, click redirect and one-click unsubscribe, with tokens from an email the real
dispatcher rendered: only genuine tokens record anything, a click only ever redirects to
the signed URL, and a click moves a waiting customer down the reaction path."""

from __future__ import annotations

from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from channels.tracking import sign_token
from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import (
    SIGNING_KEY,
    email_sent_to,
    enrollment,
    events_named,
    path_of,
    rows,
    tracking_urls,
    transitions,
)

ON_POSTGRES_TOO = True  # each test runs on SQLite and on PostgreSQL

GIF_MAGIC = b"GIF89a"


def test_a_click_redirects_to_exactly_the_signed_url_and_takes_the_reaction_path(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    assert enrollment(runtime).state == "wait_email"
    [link] = tracking_urls(email, "t/c")
    r = client.get(path_of(link), follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example/cart/c1"
    assert r.headers["referrer-policy"] == "no-referrer"
    [clicked] = events_named(runtime, "email.clicked")
    assert clicked.customer_id == "u1"
    assert clicked.properties["delivery_key"] == email.idempotency_key
    assert clicked.properties["url"] == "https://shop.example/cart/c1"
    runtime.engine.run_until_idle()
    assert ("wait_email", "engaged", "react") in transitions(runtime)
    assert enrollment(runtime).state == "engaged"


def test_a_double_click_is_one_click(client: TestClient, runtime: Runtime) -> None:
    email = email_sent_to(client, runtime)
    [link] = tracking_urls(email, "t/c")
    for _ in range(3):
        assert client.get(path_of(link), follow_redirects=False).status_code == 302
    assert len(events_named(runtime, "email.clicked")) == 1


def test_a_tampered_click_token_is_404_records_nothing_and_never_redirects(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    [link] = tracking_urls(email, "t/c")
    body, mac = path_of(link).removeprefix("/t/c/").split(".")
    evil = sign_token(
        "some-other-key-0123456789",
        kind="click",
        delivery_key=email.idempotency_key,
        customer_id="u1",
        url="https://evil.example/",
        expires_at=runtime.clock.now() + timedelta(days=1),
    )
    for token in (f"{body[:-2]}xx.{mac}", f"{body}.{mac[:-2]}xx", evil, "garbage", "a.b.c"):
        r = client.get(f"/t/c/{token}", follow_redirects=False)
        assert r.status_code == 404
        assert "location" not in r.headers
    assert events_named(runtime, "email.clicked") == []


def test_an_expired_click_token_is_404(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    email = email_sent_to(client, runtime)
    [link] = tracking_urls(email, "t/c")
    clock.advance(timedelta(days=91))
    r = client.get(path_of(link), follow_redirects=False)
    assert r.status_code == 404
    assert events_named(runtime, "email.clicked") == []


def test_an_open_token_is_not_a_click_token(client: TestClient, runtime: Runtime) -> None:
    email = email_sent_to(client, runtime)
    [pixel] = tracking_urls(email, "t/o")
    token = path_of(pixel).removeprefix("/t/o/")
    assert client.get(f"/t/c/{token}", follow_redirects=False).status_code == 404


def test_the_pixel_is_always_a_gif_and_records_one_open_per_delivery(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    [pixel] = tracking_urls(email, "t/o")
    for _ in range(2):
        r = client.get(path_of(pixel))
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/gif"
        assert r.content.startswith(GIF_MAGIC)
        assert "no-store" in r.headers["cache-control"]
    bad = client.get("/t/o/not-a-token")
    assert bad.status_code == 200 and bad.content.startswith(GIF_MAGIC)
    [opened] = events_named(runtime, "email.opened")
    assert opened.properties == {"delivery_key": email.idempotency_key}
    runtime.engine.run_until_idle()
    assert enrollment(runtime).state == "engaged"


def test_an_open_of_another_message_does_not_react(client: TestClient, runtime: Runtime) -> None:
    email_sent_to(client, runtime)
    other = sign_token(
        SIGNING_KEY,
        kind="open",
        delivery_key="some-other-delivery",
        customer_id="u1",
        expires_at=runtime.clock.now() + timedelta(days=1),
    )
    client.get(f"/t/o/{other}")
    runtime.engine.run_until_idle()
    assert enrollment(runtime).state == "wait_email"  # match_message: true


def test_unsubscribe_page_does_not_unsubscribe(client: TestClient, runtime: Runtime) -> None:
    email = email_sent_to(client, runtime)
    [url] = tracking_urls(email, "u")
    r = client.get(path_of(url))
    assert r.status_code == 200
    assert 'name="List-Unsubscribe" value="One-Click"' in r.text
    assert '<form method="post">' in r.text
    assert events_named(runtime, "email.unsubscribed") == []
    assert client.get("/u/forged.token").status_code == 404


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_one_click_unsubscribe_revokes_consent_and_exits_journeys(
    client: TestClient, runtime: Runtime, content: bytes, content_type: str
) -> None:
    email = email_sent_to(client, runtime)
    [url] = tracking_urls(email, "u")
    r = client.post(path_of(url), content=content, headers={"Content-Type": content_type})
    assert r.status_code == 200
    assert "Unsubscribed" in r.text
    [customer] = rows(runtime, t.customers)
    assert customer.consent["email"] == {
        "granted": False,
        "source": "unsubscribe",
        "at": runtime.clock.now().isoformat(),
    }
    [event] = events_named(runtime, "email.unsubscribed")
    assert event.properties["delivery_key"] == email.idempotency_key
    assert event.properties["channel"] == "email"
    runtime.engine.run_until_idle()
    row = enrollment(runtime)
    assert (row.status, row.exit_reason) == ("ended", "email.unsubscribed")
    again = client.post(path_of(url), content=content, headers={"Content-Type": content_type})
    assert again.status_code == 200
    assert len(events_named(runtime, "email.unsubscribed")) == 1


def test_unsubscribe_post_needs_the_rfc_8058_body_and_a_genuine_token(
    client: TestClient, runtime: Runtime
) -> None:
    email = email_sent_to(client, runtime)
    [url] = tracking_urls(email, "u")
    assert client.post(path_of(url), content=b"").status_code == 400
    r = client.post("/u/forged.token", content=b"List-Unsubscribe=One-Click")
    assert r.status_code == 404
    [customer] = rows(runtime, t.customers)
    assert customer.consent == {}
    assert events_named(runtime, "email.unsubscribed") == []

"""Tracking tokens and the rewriting of rendered email HTML."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.base import Recipient
from channels.templates import TemplateSet
from channels.tracking import (
    InvalidToken,
    TrackingConfig,
    add_open_pixel,
    apply_tracking,
    sign_token,
    verify_token,
)

KEY = b"k" * 32
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = TrackingConfig(base_url="https://t.example/", key=KEY)


def token_for(kind: str = "click", **kw: object) -> str:
    args: dict[str, object] = {
        "kind": kind,
        "delivery_key": "d-1",
        "customer_id": "c-1",
        "expires_at": NOW + timedelta(days=1),
        "url": "https://shop.example/x?a=1&b=2" if kind == "click" else None,
    }
    args.update(kw)
    return sign_token(KEY, **args)  # type: ignore[arg-type]


def test_roundtrip() -> None:
    payload = verify_token(KEY, token_for(), NOW)
    assert payload.kind == "click"
    assert payload.delivery_key == "d-1"
    assert payload.customer_id == "c-1"
    assert payload.url == "https://shop.example/x?a=1&b=2"


def test_token_is_url_safe() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+", token_for())


def test_wrong_key_rejected() -> None:
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(b"x" * 32, token_for(), NOW)


def test_tampered_payload_rejected() -> None:
    token = token_for()
    body, mac = token.split(".")
    forged = sign_token(
        b"x" * 32,
        kind="click",
        delivery_key="d-1",
        customer_id="c-1",
        expires_at=NOW + timedelta(days=1),
        url="https://evil.example/",
    ).split(".")[0]
    with pytest.raises(InvalidToken):
        verify_token(KEY, f"{forged}.{mac}", NOW)
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        verify_token(KEY, f"{flipped}.{mac}", NOW)


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "!!!.???", "e30.AAAA"])
def test_malformed_rejected(junk: str) -> None:
    with pytest.raises(InvalidToken):
        verify_token(KEY, junk, NOW)


def test_expired_rejected() -> None:
    token = token_for(expires_at=NOW)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(KEY, token, NOW)
    assert verify_token(KEY, token, NOW - timedelta(seconds=1)).kind == "click"


def test_kind_is_enforced() -> None:
    token = token_for("open")
    assert verify_token(KEY, token, NOW, kind="open").url is None
    with pytest.raises(InvalidToken, match="unsubscribe"):
        verify_token(KEY, token, NOW, kind="unsubscribe")


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        sign_token(b"short", kind="open", delivery_key="d", customer_id="c", expires_at=NOW)


HTML = (
    "<html><body><p>Hi</p>"
    '<a href="https://shop.example/p?a=1&amp;b=2">shop</a> '
    "<a class='x' href='http://old.example/'>old</a> "
    '<a href="mailto:help@shop.example">mail</a> '
    '<a href="#top">top</a>'
    "</body></html>"
)


def test_apply_tracking_rewrites_links_adds_pixel_and_unsubscribe() -> None:
    tracked = apply_tracking(
        {"subject": "s", "text": "t", "html": HTML},
        CONFIG,
        delivery_key="d-9",
        customer_id="c-9",
        now=NOW,
    )
    html = tracked.content["html"]
    assert tracked.content["subject"] == "s"
    assert tracked.content["text"] == "t"
    links = re.findall(r"""href=["']([^"']+)["']""", html)
    assert links[2:] == ["mailto:help@shop.example", "#top"]
    targets = []
    for link in links[:2]:
        assert link.startswith("https://t.example/t/c/")
        payload = verify_token(KEY, link.rsplit("/", 1)[1], NOW, kind="click")
        assert (payload.delivery_key, payload.customer_id) == ("d-9", "c-9")
        targets.append(payload.url)
    assert targets == ["https://shop.example/p?a=1&b=2", "http://old.example/"]
    pixel = re.search(r'<img src="(https://t\.example/t/o/[^"]+)"[^>]*/></body>', html)
    assert pixel is not None
    assert verify_token(KEY, pixel.group(1).rsplit("/", 1)[1], NOW, kind="open").delivery_key == (
        "d-9"
    )
    assert tracked.unsubscribe_url.startswith("https://t.example/u/")
    unsub = verify_token(KEY, tracked.unsubscribe_url.rsplit("/", 1)[1], NOW, kind="unsubscribe")
    assert unsub.customer_id == "c-9"


def test_own_links_are_not_wrapped() -> None:
    unsub = "https://t.example/u/abc.def"
    tracked = apply_tracking(
        {"html": f'<a href="{unsub}">stop</a>'}, CONFIG, delivery_key="d", customer_id="c", now=NOW
    )
    assert f'href="{unsub}"' in tracked.content["html"]


def test_pixel_appended_without_body() -> None:
    out = add_open_pixel("<p>x</p>", "https://t.example/t/o/tok")
    assert out.startswith('<p>x</p><img src="https://t.example/t/o/tok"')


def test_tracking_can_be_switched_off() -> None:
    config = TrackingConfig(
        base_url="https://t.example", key=KEY, track_clicks=False, track_opens=False
    )
    tracked = apply_tracking({"html": HTML}, config, delivery_key="d", customer_id="c", now=NOW)
    assert tracked.content["html"] == HTML
    assert tracked.unsubscribe_url.startswith("https://t.example/u/")


def test_unsubscribe_link_in_template_gets_the_signed_url(tmp_path: Path) -> None:
    (tmp_path / "news.yaml").write_text(
        "subject: s\n"
        "text: 'Stop: {{ unsubscribe_url }}'\n"
        'html: \'<a href="{{ unsubscribe_url }}">stop</a> <a href="https://shop.example">x</a>\'\n'
    )
    rendered = TemplateSet.load(tmp_path).render("news", recipient=Recipient(customer_id="c-5"))
    tracked = apply_tracking(rendered, CONFIG, delivery_key="d-5", customer_id="c-5", now=NOW)
    url = tracked.unsubscribe_url
    assert tracked.content["text"] == f"Stop: {url}"
    links = re.findall(r'href="([^"]+)"', tracked.content["html"])
    assert links[0] == url
    assert links[1].startswith("https://t.example/t/c/")
    assert "parcours.invalid" not in str(tracked.content)

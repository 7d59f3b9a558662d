"""Signed tokens for click, open and unsubscribe tracking, and the HTML rewriting that
puts them into an email.

A token is ``base64url(payload JSON) "." base64url(HMAC-SHA256(key, payload))``. It carries
its kind (``c`` click, ``o`` open, ``u`` unsubscribe), the delivery key, the customer id, the
target URL for clicks and an expiry. Signing the target URL is what stops the click endpoint
from being an open redirect: it only ever redirects to the URL that was signed. The HTTP
endpoints live in the orchestrator; they call :func:`verify_token` and nothing else.

The dispatcher calls one function, :func:`apply_tracking`, on rendered email content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

TokenKind = Literal["click", "open", "unsubscribe"]
_KIND_CODES: Mapping[TokenKind, str] = {"click": "c", "open": "o", "unsubscribe": "u"}
_CODE_KINDS: Mapping[str, TokenKind] = {v: k for k, v in _KIND_CODES.items()}

DEFAULT_TRACKING_TTL = timedelta(days=90)
#: What ``{{ unsubscribe_url }}`` renders to before tracking knows the real URL; the
#: ``.invalid`` TLD (RFC 2606) guarantees it can never resolve if it ever slipped through.
UNSUBSCRIBE_PLACEHOLDER = "https://unsubscribe.parcours.invalid/"
DEFAULT_UNSUBSCRIBE_TTL = timedelta(days=365)

_HREF = re.compile(
    r"""(<a(?:rea)?\b[^>]*?\bhref\s*=\s*)(["'])(\s*https?://[^"']*)\2""",
    re.IGNORECASE,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class InvalidToken(ValueError):
    """The token is malformed, was tampered with, signed with another key, or expired."""


@dataclass(frozen=True, slots=True)
class TokenPayload:
    """What a verified token says."""

    kind: TokenKind
    delivery_key: str
    customer_id: str
    expires_at: datetime
    url: str | None = None


def _as_key(key: bytes | str) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < 16:
        raise ValueError("tracking key must be at least 16 bytes")
    return raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(
    key: bytes | str,
    *,
    kind: TokenKind,
    delivery_key: str,
    customer_id: str,
    expires_at: datetime,
    url: str | None = None,
) -> str:
    """A URL-safe token for ``kind``; clicks must carry the target ``url``."""
    if kind == "click" and not url:
        raise ValueError("a click token needs the target url")
    payload: dict[str, str | int] = {
        "k": _KIND_CODES[kind],
        "d": delivery_key,
        "c": customer_id,
        "e": int(expires_at.timestamp()),
    }
    if url is not None:
        payload["u"] = url
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(_as_key(key), body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify_token(
    key: bytes | str, token: str, now: datetime, *, kind: TokenKind | None = None
) -> TokenPayload:
    """The payload of a genuine, unexpired token (of ``kind`` when given) or ``InvalidToken``.

    The MAC is checked (in constant time) before the payload is even parsed.
    """
    try:
        body_part, mac_part = token.split(".")
        body = _unb64(body_part)
        mac = _unb64(mac_part)
    except (ValueError, binascii.Error) as exc:
        raise InvalidToken("malformed token") from exc
    expected = hmac.new(_as_key(key), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise InvalidToken("bad signature (tampered token or wrong key)")
    try:
        data = json.loads(body)
        found = _CODE_KINDS[data["k"]]
        expires_at = datetime.fromtimestamp(int(data["e"]), UTC)
        payload = TokenPayload(
            kind=found,
            delivery_key=str(data["d"]),
            customer_id=str(data["c"]),
            expires_at=expires_at,
            url=str(data["u"]) if "u" in data else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("malformed token payload") from exc
    if now >= expires_at:
        raise InvalidToken(f"token expired at {expires_at.isoformat()}")
    if kind is not None and found != kind:
        raise InvalidToken(f"expected a {kind} token, got a {found} token")
    return payload


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """Where the tracking endpoints live and the key that signs for them."""

    base_url: str
    key: bytes | str
    track_clicks: bool = True
    track_opens: bool = True
    ttl: timedelta = DEFAULT_TRACKING_TTL
    unsubscribe_ttl: timedelta = DEFAULT_UNSUBSCRIBE_TTL

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")


def click_url(
    config: TrackingConfig, *, delivery_key: str, customer_id: str, url: str, now: datetime
) -> str:
    token = sign_token(
        config.key,
        kind="click",
        delivery_key=delivery_key,
        customer_id=customer_id,
        url=url,
        expires_at=now + config.ttl,
    )
    return f"{config.root}/t/c/{token}"


def open_url(config: TrackingConfig, *, delivery_key: str, customer_id: str, now: datetime) -> str:
    token = sign_token(
        config.key,
        kind="open",
        delivery_key=delivery_key,
        customer_id=customer_id,
        expires_at=now + config.ttl,
    )
    return f"{config.root}/t/o/{token}"


def unsubscribe_url(
    config: TrackingConfig, *, delivery_key: str, customer_id: str, now: datetime
) -> str:
    """The one-click unsubscribe URL; deterministic for the same inputs and ``now``, so a
    template can show it (render with ``unsubscribe_url=``) and the headers carry the same."""
    token = sign_token(
        config.key,
        kind="unsubscribe",
        delivery_key=delivery_key,
        customer_id=customer_id,
        expires_at=now + config.unsubscribe_ttl,
    )
    return f"{config.root}/u/{token}"


def rewrite_links(
    html_text: str, config: TrackingConfig, *, delivery_key: str, customer_id: str, now: datetime
) -> str:
    """Point every ``http(s)`` link of ``<a>``/``<area>`` at the click endpoint.

    Links already on our own tracking base URL (the unsubscribe link) are left alone; the
    target is HTML-unescaped before signing so ``&amp;`` in the markup becomes ``&`` in the
    URL the visitor is finally sent to.
    """
    own = config.root + "/"

    def replace(match: re.Match[str]) -> str:
        target = html.unescape(match.group(3).strip())
        if target.startswith(own):
            return match.group(0)
        tracked = click_url(
            config, delivery_key=delivery_key, customer_id=customer_id, url=target, now=now
        )
        return f"{match.group(1)}{match.group(2)}{tracked}{match.group(2)}"

    return _HREF.sub(replace, html_text)


def add_open_pixel(html_text: str, pixel_url: str) -> str:
    """Insert a 1x1 image before the last ``</body>``, or append it when there is none."""
    tag = (
        f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px" />'
    )
    ends = list(_BODY_END.finditer(html_text))
    if not ends:
        return html_text + tag
    at = ends[-1].start()
    return html_text[:at] + tag + html_text[at:]


@dataclass(frozen=True, slots=True)
class TrackedContent:
    """Rendered content with tracking applied, and the unsubscribe URL for the delivery."""

    content: dict[str, str]
    unsubscribe_url: str


def apply_tracking(
    content: Mapping[str, str],
    config: TrackingConfig,
    *,
    delivery_key: str,
    customer_id: str,
    now: datetime,
) -> TrackedContent:
    """The one call the dispatcher makes on rendered email content before building the
    ``Delivery``: unsubscribe URL computed (and put where templates wrote
    ``{{ unsubscribe_url }}``), links rewritten, open pixel added."""
    unsub = unsubscribe_url(config, delivery_key=delivery_key, customer_id=customer_id, now=now)
    out = {part: value.replace(UNSUBSCRIBE_PLACEHOLDER, unsub) for part, value in content.items()}
    html_text = out.get("html")
    if html_text:
        if config.track_clicks:
            html_text = rewrite_links(
                html_text, config, delivery_key=delivery_key, customer_id=customer_id, now=now
            )
        if config.track_opens:
            pixel = open_url(config, delivery_key=delivery_key, customer_id=customer_id, now=now)
            html_text = add_open_pixel(html_text, pixel)
        out["html"] = html_text
    return TrackedContent(content=out, unsubscribe_url=unsub)

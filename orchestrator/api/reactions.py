"""What a recipient does with an email: open it, click a link, unsubscribe.

The tokens in the URLs are HMAC-signed by the dispatcher (``channels.tracking``); a
token's signature and expiry are checked before anything is recorded, and the click
endpoint redirects only to the URL inside a genuine token, so it is never an open
redirect. Reactions become ``email.opened`` / ``email.clicked`` / ``email.unsubscribed``
events carrying ``properties.delivery_key``, which is what a journey's
``match_message: true`` wait compares with the message it sent.

Deduplication is what a recipient expects: an email opened five times is one open for
the journey (``open:<delivery>``); the same link clicked twice is one click, another link
of the same email is another click (``click:<delivery>:<url hash>``).

Unsubscribing follows RFC 8058: mail clients POST ``List-Unsubscribe=One-Click`` to the URL
of the ``List-Unsubscribe`` header. A GET only shows a page with a confirm button, because
mail scanners fetch links to inspect them and must not unsubscribe anyone.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from channels.tracking import InvalidToken, TokenKind, TokenPayload, verify_token
from orchestrator import ingest as inbox
from orchestrator.api.body import inflate, read_raw
from orchestrator.api.errors import bad_request
from orchestrator.api.recording import (
    delivery_channel,
    erased_among,
    internal_event,
    message_id,
    revoke_consent,
)
from orchestrator.api.state import ApiState, api_state

log = structlog.get_logger("parcours.api.reactions")
router = APIRouter(tags=["reactions"])

#: A transparent 1x1 GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0"}
_UNSAFE_URL_CHARS = {chr(i) for i in range(33)} | {chr(127)}


def _verified(state: ApiState, token: str, kind: TokenKind) -> TokenPayload | None:
    try:
        return verify_token(state.runtime.tracking.key, token, state.runtime.clock.now(), kind=kind)
    except InvalidToken:
        return None
    except ValueError:  # a signing key shorter than 16 bytes: the operator's mistake
        log.error("tracking signing key unusable; set keys.signing_key (16+ bytes)")
        return None


@dataclass(frozen=True, slots=True)
class Reaction:
    name: str
    message: str
    payload: TokenPayload
    properties: dict[str, str]


def _record(state: ApiState, reaction: Reaction, user_agent: str | None) -> bool:
    """Write the reaction unless the customer was erased; unsubscribes also revoke consent."""
    rt = state.runtime
    p = reaction.payload
    with state.writing() as conn:
        now = rt.clock.now()
        if erased_among(conn, [p.customer_id]):
            return False
        props: dict[str, str] = {"delivery_key": p.delivery_key, **reaction.properties}
        if reaction.name == "email.unsubscribed":
            channel = delivery_channel(conn, p.delivery_key) or "email"
            props["channel"] = channel
            revoke_consent(conn, p.customer_id, channel, "unsubscribe", now)
        event = internal_event(
            customer_id=p.customer_id,
            name=reaction.name,
            message=reaction.message,
            occurred_at=now,
            properties=props,
            context={"userAgent": user_agent[:512]} if user_agent else None,
        )
        accepted, _ = inbox.record(conn, [event], now)
    if accepted:
        state.counters.reacted(reaction.name)
    return True


def _location(url: str) -> str:
    """The signed URL as a header value: unchanged when it is plain ASCII (it normally
    is), with spaces, controls and non-ASCII characters percent-encoded otherwise."""
    if url.isascii() and not (_UNSAFE_URL_CHARS & set(url)):
        return url
    return quote(url, safe="".join(chr(i) for i in range(33, 127)))


@router.get(
    "/t/o/{token}",
    summary="Open pixel",
    description="Always a 1x1 GIF; records `email.opened` once per delivery for a valid token.",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}, "description": "A transparent 1x1 GIF"}},
)
async def open_pixel(token: str, request: Request) -> Response:
    state = api_state(request)
    payload = _verified(state, token, "open")
    if payload is not None:
        reaction = Reaction("email.opened", message_id("open", payload.delivery_key), payload, {})
        await run_in_threadpool(_record, state, reaction, request.headers.get("user-agent"))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


_INVALID_LINK = """<!doctype html><meta charset="utf-8"><title>Link not valid</title>
<p>This link is not valid or has expired.</p>"""


@router.get(
    "/t/c/{token}",
    summary="Click redirect",
    description="302 to the URL that was signed into the token, and records `email.clicked`. "
    "A tampered, foreign or expired token gets 404 and no redirect.",
    response_class=Response,
    responses={302: {"description": "Redirect to the signed URL"}, 404: {"description": "Bad"}},
)
async def click(token: str, request: Request) -> Response:
    state = api_state(request)
    payload = _verified(state, token, "click")
    url = payload.url if payload is not None else None
    if payload is None or not url or not url.lower().startswith(("https://", "http://")):
        return HTMLResponse(_INVALID_LINK, status_code=404, headers=NO_STORE)
    url_hash = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    reaction = Reaction(
        "email.clicked",
        message_id("click", payload.delivery_key, url_hash),
        payload,
        {"url": url},
    )
    await run_in_threadpool(_record, state, reaction, request.headers.get("user-agent"))
    return Response(
        status_code=302,
        headers={"Location": _location(url), "Referrer-Policy": "no-referrer", **NO_STORE},
    )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><body><h1>{html.escape(title)}</h1>{body}</body>"
        "</html>",
        status_code=status,
        headers={**NO_STORE, "Referrer-Policy": "no-referrer"},
    )


def _bad_unsubscribe() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid or has expired. Use the link in a more "
        "recent email, or reply to it to be removed by hand.</p>",
        404,
    )


@router.get(
    "/u/{token}",
    summary="Unsubscribe page",
    description="A page with a confirm button; GET itself changes nothing (link scanners).",
    response_class=HTMLResponse,
)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    if _verified(api_state(request), token, "unsubscribe") is None:
        return _bad_unsubscribe()
    return _page(
        "Unsubscribe",
        "<p>Do you want to stop receiving these emails?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


def _one_click(body: bytes) -> bool:
    """RFC 8058's ``List-Unsubscribe=One-Click``, whether form-urlencoded or multipart."""
    text = body.decode("latin-1")
    return "List-Unsubscribe" in text and "One-Click" in text


@router.post(
    "/u/{token}",
    summary="One-click unsubscribe (RFC 8058)",
    description="Body `List-Unsubscribe=One-Click`. Revokes consent for the delivery's channel "
    "in `customers.consent` and records `email.unsubscribed`, which journeys exit on.",
    response_class=HTMLResponse,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}
                        },
                        "required": ["List-Unsubscribe"],
                    }
                }
            }
        }
    },
)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    state = api_state(request)
    body = inflate(
        await read_raw(request, state.max_body),
        request.headers.get("content-encoding", ""),
        state.max_body,
    )
    payload = _verified(state, token, "unsubscribe")
    if payload is None:
        return _bad_unsubscribe()
    if not _one_click(body):
        raise bad_request("the body must be List-Unsubscribe=One-Click (RFC 8058)", "body")
    reaction = Reaction(
        "email.unsubscribed",
        message_id("unsubscribe", payload.delivery_key),
        payload,
        {"source": "one-click"},
    )
    await run_in_threadpool(_record, state, reaction, request.headers.get("user-agent"))
    return _page("Unsubscribed", "<p>You will not receive these emails any more.</p>")

"""Provider webhooks: ``POST /v1/webhooks/sendgrid``, ``/mailgun`` and ``/postmark``.

The receivers in ``channels.callbacks`` verify and parse; this module finds their settings,
matches each normalised event to the delivery it is about and records it for the
delivery's customer. The rules a provider and an operator rely on:

* **Configuration** comes from the channel instances in ``[channels]``: the first (by
  name) with ``webhook_provider = "<provider>"``, else the first whose ``type`` is the
  provider. Mailgun has no sending adapter, so an SMTP (or log) channel that sends through
  Mailgun sets ``webhook_provider = "mailgun"`` and ``webhook_signing_key_env``. With no
  such channel the endpoint answers 404.
* **Unverified requests get 401 and change nothing.** A Mailgun token is used once: the
  receiver refuses tokens already stored, and the token is stored in the same transaction
  as the events, so a replay racing the original is refused too.
* **Provider event ids deduplicate** (``provider_events``): a provider retrying a
  delivered webhook records nothing twice.
* Events are matched by our delivery key (echoed back as custom args / metadata) or by the
  provider's message id; events about no delivery we know, or about an erased customer,
  are counted as ``unmatched`` and dropped.
* Unsubscribes and spam complaints also revoke consent for the delivery's channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import Connection, insert, or_, select
from sqlalchemy.exc import IntegrityError

from channels.base import CallbackReceiver, ConfigurationError, InboundRequest, ProviderEvent
from channels.callbacks import build_receiver
from orchestrator import ingest as inbox
from orchestrator.api.body import read_raw
from orchestrator.api.errors import ApiError, bad_request
from orchestrator.api.recording import erased_among, internal_event, message_id, revoke_consent
from orchestrator.api.state import ApiState, api_state
from orchestrator.db import tables as t

log = structlog.get_logger("parcours.api.webhooks")
router = APIRouter(tags=["webhooks"])

PROVIDERS = ("sendgrid", "mailgun", "postmark")
MAILGUN_TOKENS = "mailgun-token"
REVOKING = {"email.unsubscribed": "unsubscribe", "email.complained": "complaint"}


class WebhookResult(BaseModel):
    received: int
    recorded: int
    duplicates: int
    unmatched: int


class Replay(Exception):
    """A Mailgun token that was already used."""


def channel_for(settings: Mapping[str, Mapping[str, Any]], provider: str) -> str | None:
    names = sorted(settings)
    for name in names:
        if settings[name].get("webhook_provider") == provider:
            return name
    for name in names:
        if settings[name].get("type") == provider:
            return name
    return None


def _token_unused(state: ApiState, token: str) -> bool:
    p = t.provider_events.c
    with state.reader.connect() as conn:
        found = conn.execute(
            select(p.event_id).where(p.provider == MAILGUN_TOKENS, p.event_id == token[:255])
        ).first()
    return found is None


def receiver_for(state: ApiState, provider: str) -> CallbackReceiver | None:
    """The configured receiver (built once), or None when no channel names this provider."""
    if provider in state.receivers:
        receiver: CallbackReceiver | None = state.receivers[provider]
        return receiver
    rt = state.runtime
    name = channel_for(rt.settings.channels, provider)
    receiver = None
    if name is not None:
        conf = rt.settings.channels[name]
        try:
            if provider == "mailgun":
                from channels.callbacks.mailgun import MailgunWebhook
                from channels.settings import Settings

                receiver = MailgunWebhook.from_settings(
                    Settings(name, provider, conf, state.env),
                    clock=rt.clock.now,
                    token_guard=lambda token: _token_unused(state, token),
                )
            else:
                receiver = build_receiver(provider, name, conf, state.env, clock=rt.clock.now)
        except ConfigurationError as exc:
            log.error("webhook receiver misconfigured", provider=provider, error=str(exc))
            raise ApiError(
                503, f"{provider} webhooks are misconfigured: {exc}", code="misconfigured"
            ) from None
    state.receivers[provider] = receiver
    return receiver


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    customer_id: str
    channel: str


def _targets(
    conn: Connection, events: Sequence[ProviderEvent]
) -> tuple[dict[str, Target], dict[str, Target]]:
    keys = sorted({e.delivery_key for e in events if e.delivery_key})
    pids = sorted({e.provider_message_id for e in events if e.provider_message_id})
    by_key: dict[str, Target] = {}
    by_pid: dict[str, Target] = {}
    if not keys and not pids:
        return by_key, by_pid
    d = t.deliveries.c
    rows = conn.execute(
        select(d.idempotency_key, d.provider_message_id, d.customer_id, d.channel).where(
            or_(d.idempotency_key.in_(keys), d.provider_message_id.in_(pids))
        )
    )
    for r in rows:
        target = Target(r.idempotency_key, r.customer_id, r.channel)
        by_key[r.idempotency_key] = target
        if r.provider_message_id:
            by_pid[r.provider_message_id] = target
    return by_key, by_pid


def store(
    state: ApiState, provider: str, events: Sequence[ProviderEvent], token: str | None
) -> WebhookResult:
    rt = state.runtime
    p = t.provider_events.c
    with state.writing() as conn:
        now = rt.clock.now()
        if token is not None:
            used = conn.execute(
                select(p.event_id).where(p.provider == MAILGUN_TOKENS, p.event_id == token[:255])
            ).first()
            if used is not None:
                raise Replay(token)
            conn.execute(
                insert(t.provider_events),
                [{"provider": MAILGUN_TOKENS, "event_id": token[:255], "received_at": now}],
            )
        ids = sorted({e.provider_event_id[:255] for e in events})
        seen = (
            {
                r.event_id
                for r in conn.execute(
                    select(p.event_id).where(p.provider == provider, p.event_id.in_(ids))
                )
            }
            if ids
            else set()
        )
        fresh: list[ProviderEvent] = []
        for e in events:
            eid = e.provider_event_id[:255]
            if eid not in seen:
                seen.add(eid)
                fresh.append(e)
        if fresh:
            conn.execute(
                insert(t.provider_events),
                [
                    {
                        "provider": provider,
                        "event_id": e.provider_event_id[:255],
                        "received_at": now,
                    }
                    for e in fresh
                ],
            )
        by_key, by_pid = _targets(conn, fresh)
        matched: list[tuple[ProviderEvent, Target]] = []
        for e in fresh:
            target = by_key.get(e.delivery_key or "") or by_pid.get(e.provider_message_id or "")
            if target is not None:
                matched.append((e, target))
        erased = erased_among(conn, [tg.customer_id for _, tg in matched])
        matched = [(e, tg) for e, tg in matched if tg.customer_id not in erased]
        records = []
        for e, tg in matched:
            props = {k: v for k, v in e.properties.items() if k != "mailgun_token"}
            props |= {"delivery_key": tg.key, "channel": tg.channel}
            if e.provider_message_id:
                props["provider_message_id"] = e.provider_message_id
            records.append(
                internal_event(
                    customer_id=tg.customer_id,
                    name=e.event,
                    message=message_id(provider, e.provider_event_id),
                    occurred_at=e.occurred_at,
                    properties=props,
                )
            )
            if e.event in REVOKING:
                revoke_consent(
                    conn, tg.customer_id, tg.channel, f"{provider}:{REVOKING[e.event]}", now
                )
        accepted, _ = inbox.record(conn, records, now)
    for e, _tg in matched:
        state.counters.reacted(e.event)
    return WebhookResult(
        received=len(events),
        recorded=accepted,
        duplicates=len(events) - len(fresh),
        unmatched=len(fresh) - len(matched),
    )


def _verify_and_parse(
    receiver: CallbackReceiver, inbound: InboundRequest, provider: str
) -> list[ProviderEvent]:
    try:
        verified = receiver.verify(inbound)
    except Exception:  # a receiver bug must not turn a forged request into a 500
        log.exception("webhook verification raised", provider=provider)
        verified = False
    if not verified:
        raise ApiError(401, f"{provider} webhook signature or credentials not valid")
    try:
        return receiver.parse(inbound)
    except Exception as exc:  # verified but not understood: the provider's payload is at fault
        raise bad_request(f"{provider} webhook payload not understood: {exc}", "body") from None


async def handle(provider: str, request: Request) -> WebhookResult:
    state = api_state(request)
    receiver = receiver_for(state, provider)
    if receiver is None:
        raise ApiError(
            404,
            f"no channel receives {provider} webhooks; set webhook_provider = {provider!r} "
            "on a channel in [channels]",
        )
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(415, "webhook bodies must not be compressed (signatures cover the body)")
    body = await read_raw(request, state.max_body)
    inbound = InboundRequest(
        method=request.method,
        path=request.url.path,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        query=dict(request.query_params),
    )
    events = await run_in_threadpool(_verify_and_parse, receiver, inbound, provider)
    token = None
    if provider == "mailgun":
        from channels.callbacks.mailgun import MailgunWebhook

        token = MailgunWebhook.token(inbound)
    try:
        return await run_in_threadpool(store, state, provider, events, token)
    except (Replay, IntegrityError):
        raise ApiError(401, f"{provider} webhook token already used (replay)") from None


_DESCRIPTIONS = {
    "sendgrid": "SendGrid Event Webhook, signed with ECDSA over timestamp + body.",
    "mailgun": "Mailgun webhook, HMAC-SHA256 over timestamp + token; each token used once.",
    "postmark": "Postmark webhook, authenticated with HTTP Basic credentials.",
}


def _route(provider: str) -> None:
    async def endpoint(request: Request) -> WebhookResult:
        return await handle(provider, request)

    endpoint.__name__ = f"webhook_{provider}"
    router.add_api_route(
        f"/v1/webhooks/{provider}",
        endpoint,
        methods=["POST"],
        response_model=WebhookResult,
        summary=f"{provider.capitalize()} events",
        description=_DESCRIPTIONS[provider],
        responses={
            401: {"description": "Not verified; nothing recorded"},
            404: {"description": "No channel configured for this provider"},
        },
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": {}}}, "required": True}
        },
    )


for _provider in PROVIDERS:
    _route(_provider)

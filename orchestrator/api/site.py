"""On-site messages for the shop's pages: ``GET /v1/site/messages``, and the visitor's
reactions ``POST /v1/site/click`` and ``/v1/site/dismiss``.

``GET /v1/site/messages`` runs while the shop renders a page, so it is built for latency:
one indexed query (``ix_site_messages_customer``) on the read-only engine, no per-message
queries. It also records a ``site.viewed`` impression per message, once per message and
UTC day (``site.viewed:<delivery>:<day>``); an in-process set remembers impressions
already written so a page that is reloaded does not write again.

The site key is public by nature (it sits in the shop's JavaScript), so these endpoints
only ever reveal and touch messages of the customer named in the request, and CORS is open
for them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, func, or_, select, update

from orchestrator import ingest as inbox
from orchestrator.api.auth import basic_scheme, require_site_key, site_key_scheme
from orchestrator.api.body import read_object
from orchestrator.api.errors import ApiError, bad_request, from_validation
from orchestrator.api.recording import erased_among, internal_event, message_id
from orchestrator.api.state import ApiState, api_state
from orchestrator.db import tables as t

router = APIRouter(tags=["site"])
SECURITY = [Security(site_key_scheme), Security(basic_scheme)]
MAX_ID = inbox.MAX_ID


class SiteMessageOut(BaseModel):
    delivery_key: str
    slot: str
    html: str
    created_at: datetime
    expires_at: datetime | None = None


class SiteMessages(BaseModel):
    customer_id: str
    messages: list[SiteMessageOut]


class SiteReaction(BaseModel):
    userId: str | None = Field(None, max_length=MAX_ID)
    anonymousId: str | None = Field(None, max_length=MAX_ID)
    delivery_key: str = Field(max_length=160)


class ReactionResult(BaseModel):
    recorded: bool


def _customer_expr(user_id: str | None, anonymous_id: str | None) -> Any:
    """The customer id as SQL: the userId, or the customer an anonymousId was linked to
    (else the ``anon:`` profile the inbox keeps for it) - inside the same statement."""
    if user_id:
        return user_id
    a = t.anonymous_ids.c
    linked = select(a.customer_id).where(a.anonymous_id == anonymous_id).scalar_subquery()
    return func.coalesce(linked, f"anon:{anonymous_id}")


def _who(user_id: str | None, anonymous_id: str | None) -> tuple[str | None, str | None]:
    user_id = (user_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    if not user_id and not anonymous_id:
        raise bad_request("userId or anonymousId is required", "userId")
    return user_id, anonymous_id


def _messages(
    state: ApiState, user_id: str | None, anonymous_id: str | None, slot: str | None
) -> SiteMessages:
    rt = state.runtime
    now = rt.clock.now()
    m = t.site_messages.c
    customer = _customer_expr(user_id, anonymous_id)
    q = (
        select(m.customer_id, m.delivery_key, m.channel, m.slot, m.html, m.created_at, m.expires_at)
        .where(m.customer_id == customer)
        .where(m.dismissed_at.is_(None))
        .where(or_(m.expires_at.is_(None), m.expires_at > now))
        .order_by(m.created_at.desc(), m.id.desc())
        .limit(50)
    )
    if slot:
        q = q.where(m.slot == slot)
    with state.reader.connect() as conn:
        rows = conn.execute(q).all()
    customer_id = rows[0].customer_id if rows else (user_id or f"anon:{anonymous_id}")
    day = now.date().isoformat()
    unseen = [r for r in rows if f"{r.delivery_key}:{day}" not in state.impressions]
    if unseen:
        impressions = [
            internal_event(
                customer_id=r.customer_id,
                name="site.viewed",
                message=message_id("site.viewed", r.delivery_key, day),
                occurred_at=now,
                properties={"delivery_key": r.delivery_key, "slot": r.slot, "channel": r.channel},
            )
            for r in unseen
        ]
        with state.writing() as conn:
            accepted, _ = inbox.record(conn, impressions, now)
        for r in unseen:
            state.impressions.add(f"{r.delivery_key}:{day}")
        if accepted:
            state.counters.reacted("site.viewed", accepted)
    return SiteMessages(
        customer_id=customer_id,
        messages=[
            SiteMessageOut(
                delivery_key=r.delivery_key,
                slot=r.slot,
                html=r.html,
                created_at=r.created_at,
                expires_at=r.expires_at,
            )
            for r in rows
        ],
    )


@router.get(
    "/v1/site/messages",
    response_model=SiteMessages,
    summary="Live on-site messages of a customer",
    description="Newest first; not expired, not dismissed. Records one `site.viewed` per "
    "message and day. Authenticate with the site key (`X-Site-Key` or Basic user).",
    dependencies=SECURITY,
    responses={401: {"description": "Missing or unknown site key"}},
)
async def site_messages(
    request: Request,
    user_id: str | None = Query(None, alias="userId", max_length=MAX_ID),
    anonymous_id: str | None = Query(None, alias="anonymousId", max_length=MAX_ID),
    slot: str | None = Query(None, max_length=64, description="Only messages for this slot."),
) -> Response:
    state = api_state(request)
    require_site_key(request, state.site_keys)
    uid, aid = _who(user_id, anonymous_id)
    result = await run_in_threadpool(_messages, state, uid, aid, slot)
    # Serialised once, here: returning the model would have FastAPI validate it again
    # against response_model on this page-render path.
    return Response(result.model_dump_json(), media_type="application/json")


def _react(state: ApiState, body: SiteReaction, event: str) -> bool:
    rt = state.runtime
    uid, aid = _who(body.userId, body.anonymousId)
    m = t.site_messages.c
    with state.writing() as conn:
        now = rt.clock.now()
        row = conn.execute(
            select(m.id, m.customer_id, m.channel, m.slot).where(
                and_(m.delivery_key == body.delivery_key, m.customer_id == _customer_expr(uid, aid))
            )
        ).first()
        if row is None:
            raise ApiError(404, "no such site message for this customer", field="delivery_key")
        if erased_among(conn, [row.customer_id]):
            return False
        if event == "site.dismissed":
            conn.execute(
                update(t.site_messages)
                .where(m.id == row.id, m.dismissed_at.is_(None))
                .values(dismissed_at=now)
            )
        record = internal_event(
            customer_id=row.customer_id,
            name=event,
            message=message_id(event, body.delivery_key),
            occurred_at=now,
            properties={
                "delivery_key": body.delivery_key,
                "slot": row.slot,
                "channel": row.channel,
            },
        )
        accepted, _ = inbox.record(conn, [record], now)
    if accepted:
        state.counters.reacted(event)
    return bool(accepted)


async def _reaction(request: Request, event: str) -> ReactionResult:
    state = api_state(request)
    require_site_key(request, state.site_keys)
    data = await read_object(request, state.max_body)
    try:
        body = SiteReaction.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
    return ReactionResult(recorded=await run_in_threadpool(_react, state, body, event))


def _body_doc() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SiteReaction"}}
            },
        }
    }


@router.post(
    "/v1/site/click",
    response_model=ReactionResult,
    summary="A visitor clicked an on-site message",
    description="Records `site.clicked` (once per message). 404 when the message is not "
    "this customer's.",
    dependencies=SECURITY,
    openapi_extra=_body_doc(),
)
async def site_click(request: Request) -> ReactionResult:
    return await _reaction(request, "site.clicked")


@router.post(
    "/v1/site/dismiss",
    response_model=ReactionResult,
    summary="A visitor dismissed an on-site message",
    description="Hides the message from later fetches and records `site.dismissed`.",
    dependencies=SECURITY,
    openapi_extra=_body_doc(),
)
async def site_dismiss(request: Request) -> ReactionResult:
    return await _reaction(request, "site.dismissed")


DOC_MODELS = (SiteReaction,)

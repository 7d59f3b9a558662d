"""On-site messages for the shop's pages: ``GET /v1/site/messages``, and the visitor's
reactions ``POST /v1/site/click`` and ``/v1/site/dismiss``.

``GET /v1/site/messages`` runs while the shop renders a page, so it is built for latency
(target: p99 under 10 ms at 100 concurrent clients, docs/benchmarks.md):

- :func:`answer_messages` answers it in front of FastAPI (``app.ParcoursAPI``): before
  FastAPI's per-request OpenTelemetry check, Starlette's middleware, routing, dependency
  solving and response validation, which together cost more than the query; it adds the
  site's CORS headers itself. The FastAPI route below stays for the OpenAPI document and
  answers identically.
- One indexed query (``ix_site_messages_customer``) with only the columns the answer
  needs (orchestrator/api/site_reads.py). On a SQLite file it runs on plain ``sqlite3``
  on the event loop's thread: a WAL read takes no lock and a few microseconds, less than
  handing it to a thread and fighting that thread for the GIL, and SQLAlchemy's execution
  around it cost several times the query. Other databases read through SQLAlchemy in the
  thread pool.
- The ``site.viewed`` impressions (one per message and UTC day,
  ``site.viewed:<delivery>:<day>``) go to an in-process buffer written in batches behind
  the request (orchestrator/api/impressions.py, including what a crash may lose); an
  in-process set remembers impressions already taken so a reloaded page adds none.
- The body is serialised once with orjson.

The site key is public by nature (it sits in the shop's JavaScript), so these endpoints
only ever reveal and touch messages of the customer named in the request, and CORS is open
for them.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import Scope, Send

from orchestrator import ingest as inbox
from orchestrator.api.auth import basic_scheme, check_site_key, require_site_key, site_key_scheme
from orchestrator.api.body import read_object
from orchestrator.api.errors import (
    ApiError,
    bad_request,
    database_busy,
    error_body,
    from_validation,
)
from orchestrator.api.impressions import Impression
from orchestrator.api.recording import erased_among, internal_event, message_id
from orchestrator.api.site_reads import LiveMessage, read_with_sqlalchemy
from orchestrator.api.state import ApiState, api_state
from orchestrator.db import tables as t

router = APIRouter(tags=["site"])
SECURITY = [Security(site_key_scheme), Security(basic_scheme)]
MAX_ID = inbox.MAX_ID
MAX_SLOT = 64
MESSAGES_PATH = "/v1/site/messages"


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


def _param(params: dict[str, str], name: str, max_length: int) -> str | None:
    value = params.get(name)
    if value is not None and len(value) > max_length:
        raise bad_request(f"{name}: String should have at most {max_length} characters", name)
    return value


async def messages_answer(
    state: ApiState, scope: Scope
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``GET /v1/site/messages`` from the raw ASGI scope: (status, JSON body, extra headers).
    Errors have the API's one shape (orchestrator/api/errors.py)."""
    try:
        site_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-site-key" and site_key is None:
                site_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        check_site_key(state.site_keys, site_key, authorization)
        params = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        user_id, anonymous_id = _who(
            _param(params, "userId", MAX_ID), _param(params, "anonymousId", MAX_ID)
        )
        slot = _param(params, "slot", MAX_SLOT)
        now = state.runtime.clock.now()
        if state.site_reader is not None:
            rows = state.site_reader.read(user_id, anonymous_id, slot, now)
        elif state.reader.dialect.name == "sqlite":
            rows = read_with_sqlalchemy(state.reader, user_id, anonymous_id, slot, now)
        else:
            rows = await run_in_threadpool(
                read_with_sqlalchemy, state.reader, user_id, anonymous_id, slot, now
            )
    except ApiError as exc:
        body = orjson.dumps(error_body(exc.status, exc.code, exc.message, exc.field))
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()
        ]
        return exc.status, body, headers
    except (OperationalError, InterfaceError, sqlite3.DatabaseError) as exc:
        status, payload, extra = database_busy(exc)
        return (
            status,
            orjson.dumps(payload),
            [(k.lower().encode(), v.encode()) for k, v in extra.items()],
        )
    _take_impressions(state, rows, now)
    customer_id = rows[0].customer_id if rows else (user_id or f"anon:{anonymous_id}")
    body = orjson.dumps(
        {
            "customer_id": customer_id,
            "messages": [
                {
                    "delivery_key": r.delivery_key,
                    "slot": r.slot,
                    "html": r.html,
                    "created_at": r.created_at,
                    "expires_at": r.expires_at,
                }
                for r in rows
            ],
        },
        option=orjson.OPT_UTC_Z,
    )
    return 200, body, []


def _take_impressions(state: ApiState, rows: list[LiveMessage], now: datetime) -> None:
    """Queue today's first impression of each message; the buffer writes them."""
    day = now.date().isoformat()
    seen = state.impressions
    fresh = []
    for r in rows:
        key = f"{r.delivery_key}:{day}"
        if key not in seen:
            seen.add(key)
            fresh.append(Impression(r.customer_id, r.delivery_key, r.slot, r.channel, day, now))
    if fresh:
        state.pending_impressions.add(fresh)


#: What Starlette's CORS middleware, as ``app.ScopedCORS`` configures it (any origin, no
#: credentials), adds to the answer of a simple request: the grant when the request names
#: an ``Origin``, and ``Vary: Origin`` always. :func:`answer_messages` bypasses that
#: middleware, so it adds them itself (a test compares with the middleware's answers).
CORS_ANY_ORIGIN = (b"access-control-allow-origin", b"*")
CORS_VARY = (b"vary", b"Origin")


async def answer_messages(state: ApiState, scope: Scope, send: Send) -> None:
    """Answer ``GET /v1/site/messages`` on the raw ASGI interface, CORS headers included;
    ``app.ParcoursAPI`` calls it before any of FastAPI's per-request work."""
    status, body, extra = await messages_answer(state, scope)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    for name, _ in scope["headers"]:
        if name == b"origin":
            headers.append(CORS_ANY_ORIGIN)
            break
    headers.append(CORS_VARY)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@router.get(
    MESSAGES_PATH,
    response_model=SiteMessages,
    summary="Live on-site messages of a customer",
    description="Newest first; not expired, not dismissed; at most 50. Records one "
    "`site.viewed` per message and UTC day, written within a fraction of a second. "
    "Authenticate with the site key (`X-Site-Key` or Basic user).",
    dependencies=SECURITY,
    responses={401: {"description": "Missing or unknown site key"}},
)
async def site_messages(
    request: Request,
    user_id: str | None = Query(None, alias="userId", max_length=MAX_ID),
    anonymous_id: str | None = Query(None, alias="anonymousId", max_length=MAX_ID),
    slot: str | None = Query(None, max_length=MAX_SLOT, description="Only messages for this slot."),
) -> Response:
    """Documents the endpoint; requests are answered by :func:`answer_messages` in front
    of FastAPI (``app.ParcoursAPI``), which gives the same answer through
    :func:`messages_answer`. This handler answers only where the app is built without it."""
    status, body, extra = await messages_answer(api_state(request), request.scope)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in extra}
    return Response(body, status_code=status, headers=headers, media_type="application/json")


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

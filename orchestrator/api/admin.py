"""Operator endpoints under ``/v1/admin``: journeys and their live counts, pause/resume,
a customer's timeline, enroll/exit by hand, GDPR export and erasure.

Authenticated with an admin key as a Bearer token or the HTTP Basic user name. Everything
here goes through the engine's own entry points (``enroll``, ``cancel``) or the version
registry, so a manual action leaves the same history and outbox rows as an automatic one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select, update

from orchestrator.api.auth import basic_scheme, bearer_scheme, require_admin_key
from orchestrator.api.body import inflate, parse_json, read_raw
from orchestrator.api.errors import ApiError, bad_request, from_validation
from orchestrator.api.privacy import Erasure, erase, export, related_ids
from orchestrator.api.state import ApiState, api_state
from orchestrator.db import tables as t
from orchestrator.engine import EngineError
from orchestrator.ingest import MAX_ID


def _admin(request: Request) -> None:
    require_admin_key(request, api_state(request).admin_keys)


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Security(bearer_scheme), Security(basic_scheme), Depends(_admin)],
    responses={401: {"description": "Missing or unknown admin key"}},
)


# -- journeys ----------------------------------------------------------------------------
class VersionInfo(BaseModel):
    version: str
    created_at: datetime
    current: bool
    live: int


class JourneyInfo(BaseModel):
    name: str
    status: str
    current_version: str
    description: str | None = None
    updated_at: datetime
    live: int = Field(description="Live enrollments over all versions.")
    steps: dict[str, int] = Field(description="Live enrollments per step (all versions).")
    ended: dict[str, int] = Field(description="Ended enrollments per exit reason.")
    versions: list[VersionInfo]


class JourneyStatus(BaseModel):
    name: str
    status: str


def _journeys(state: ApiState) -> list[JourneyInfo]:
    rt = state.runtime
    e = t.enrollments.c
    with state.reader.connect() as conn:
        journeys = conn.execute(select(t.journeys).order_by(t.journeys.c.name)).all()
        versions = conn.execute(
            select(
                t.journey_versions.c.journey,
                t.journey_versions.c.version,
                t.journey_versions.c.created_at,
            ).order_by(t.journey_versions.c.created_at)
        ).all()
        live = conn.execute(
            select(e.journey, e.version, e.state, func.count().label("n"))
            .where(e.status == "live")
            .group_by(e.journey, e.version, e.state)
        ).all()
        ended = conn.execute(
            select(e.journey, e.exit_reason, func.count().label("n"))
            .where(e.status == "ended")
            .group_by(e.journey, e.exit_reason)
        ).all()
    steps: dict[str, dict[str, int]] = defaultdict(dict)
    per_version: dict[tuple[str, str], int] = defaultdict(int)
    for r in live:
        steps[r.journey][r.state] = steps[r.journey].get(r.state, 0) + r.n
        per_version[(r.journey, r.version)] += r.n
    exits: dict[str, dict[str, int]] = defaultdict(dict)
    for r in ended:
        exits[r.journey][r.exit_reason or "unknown"] = r.n
    by_journey: dict[str, list[Any]] = defaultdict(list)
    for v in versions:
        by_journey[v.journey].append(v)
    out = []
    for j in journeys:
        compiled = rt.registry.current.get(j.name)
        counts = {s.id: 0 for s in compiled.definition.steps} if compiled else {}
        counts.update(steps.get(j.name, {}))
        out.append(
            JourneyInfo(
                name=j.name,
                status=j.status,
                current_version=j.current_version,
                description=compiled.definition.description if compiled else None,
                updated_at=j.updated_at,
                live=sum(steps.get(j.name, {}).values()),
                steps=counts,
                ended=exits.get(j.name, {}),
                versions=[
                    VersionInfo(
                        version=v.version,
                        created_at=v.created_at,
                        current=v.version == j.current_version,
                        live=per_version.get((j.name, v.version), 0),
                    )
                    for v in by_journey.get(j.name, [])
                ],
            )
        )
    return out


@router.get("/journeys", response_model=list[JourneyInfo], summary="Journeys and live counts")
async def list_journeys(request: Request) -> list[JourneyInfo]:
    return await run_in_threadpool(_journeys, api_state(request))


def _set_status(state: ApiState, name: str, status: str) -> JourneyStatus:
    rt = state.runtime
    j = t.journeys.c
    with state.writing() as conn:
        done = conn.execute(
            update(t.journeys)
            .where(j.name == name)
            .values(status=status, updated_at=rt.clock.now())
        )
        if done.rowcount == 0:
            raise ApiError(404, f"no journey named {name!r}")
        rt.registry.refresh_paused(conn)
    return JourneyStatus(name=name, status=status)


@router.post(
    "/journeys/{name}/pause",
    response_model=JourneyStatus,
    summary="Pause a journey",
    description="Timers of a paused journey do not fire and it takes no scheduled or "
    "condition entries until resumed; other replicas notice within seconds.",
)
async def pause(name: str, request: Request) -> JourneyStatus:
    return await run_in_threadpool(_set_status, api_state(request), name, "paused")


@router.post("/journeys/{name}/resume", response_model=JourneyStatus, summary="Resume a journey")
async def resume(name: str, request: Request) -> JourneyStatus:
    return await run_in_threadpool(_set_status, api_state(request), name, "active")


# -- customers -----------------------------------------------------------------------------
class TimelineEntry(BaseModel):
    at: datetime
    kind: str = Field(description="event | transition | delivery")
    detail: dict[str, Any]


class Timeline(BaseModel):
    customer: dict[str, Any] | None
    enrollments: list[dict[str, Any]]
    timeline: list[TimelineEntry] = Field(description="Newest first.")


def _timeline(state: ApiState, customer_id: str, limit: int) -> Timeline:
    ev, h, d, en = t.events.c, t.history.c, t.deliveries.c, t.enrollments.c
    with state.reader.connect() as conn:
        ids = related_ids(conn, customer_id)
        row = conn.execute(select(t.customers).where(t.customers.c.id == customer_id)).first()
        enrollments = [
            dict(r._mapping)
            for r in conn.execute(
                select(t.enrollments)
                .where(en.customer_id == customer_id)
                .order_by(en.entered_at.desc())
            )
        ]
        events = conn.execute(
            select(
                ev.message_id,
                ev.kind,
                ev.name,
                ev.properties,
                ev.traits,
                ev.occurred_at,
                ev.processed_at,
                ev.error,
            )
            .where(ev.customer_id.in_(ids))
            .order_by(ev.occurred_at.desc(), ev.id.desc())
            .limit(limit)
        ).all()
        transitions = conn.execute(
            select(h.enrollment_id, h.journey, h.from_state, h.to_state, h.trigger, h.at)
            .where(h.customer_id == customer_id)
            .order_by(h.at.desc(), h.id.desc())
            .limit(limit)
        ).all()
        deliveries = conn.execute(
            select(
                d.idempotency_key,
                d.operation,
                d.journey,
                d.step,
                d.channel,
                d.template,
                d.status,
                d.attempts,
                d.last_error,
                d.provider_message_id,
                d.created_at,
                d.sent_at,
            )
            .where(d.customer_id == customer_id)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        ).all()
    if row is None and not events and not enrollments:
        raise ApiError(404, f"no customer {customer_id!r}")
    entries = [
        TimelineEntry(at=r.occurred_at, kind="event", detail=_plain(r._mapping, "occurred_at"))
        for r in events
    ]
    entries += [
        TimelineEntry(at=r.at, kind="transition", detail=_plain(r._mapping, "at"))
        for r in transitions
    ]
    entries += [
        TimelineEntry(at=r.created_at, kind="delivery", detail=_plain(r._mapping, "created_at"))
        for r in deliveries
    ]
    entries.sort(key=lambda x: x.at, reverse=True)
    return Timeline(
        customer=dict(row._mapping) if row is not None else None,
        enrollments=enrollments,
        timeline=entries[:limit],
    )


def _plain(mapping: Any, skip: str) -> dict[str, Any]:
    return {k: v for k, v in dict(mapping).items() if k != skip}


@router.get(
    "/customers/{customer_id}",
    response_model=Timeline,
    summary="A customer's profile, enrollments and timeline",
)
async def customer_timeline(
    customer_id: str,
    request: Request,
    limit: int = Query(200, ge=1, le=2000, description="At most this many timeline entries."),
) -> Timeline:
    return await run_in_threadpool(_timeline, api_state(request), customer_id, limit)


@router.get(
    "/customers/{customer_id}/export",
    summary="GDPR export: everything held about a customer",
    response_model=dict[str, Any],
)
async def customer_export(customer_id: str, request: Request) -> JSONResponse:
    data = await run_in_threadpool(export, api_state(request), customer_id)
    if data is None:
        raise ApiError(404, f"no customer {customer_id!r}")
    from fastapi.encoders import jsonable_encoder

    return JSONResponse(
        jsonable_encoder(data),
        headers={"Content-Disposition": 'attachment; filename="customer-export.json"'},
    )


@router.delete(
    "/customers/{customer_id}",
    response_model=Erasure,
    summary="GDPR erasure",
    description="Ends live enrollments, removes the customer from paid audiences, then "
    "blanks or deletes personal data everywhere. 503 (nothing erased) when an audience "
    "removal fails and should be retried.",
)
async def customer_erase(customer_id: str, request: Request) -> Erasure:
    return await erase(api_state(request), customer_id)


# -- enrollments ---------------------------------------------------------------------------
class EnrollRequest(BaseModel):
    journey: str = Field(max_length=64)
    userId: str = Field(min_length=1, max_length=MAX_ID)
    key: str = Field("", max_length=255, description="Keyed journeys: one live per key.")
    properties: dict[str, Any] = Field(
        default_factory=dict, description="The context templates and conditions see as event."
    )
    messageId: str | None = Field(
        None, max_length=200, description="Makes a retried request enroll once."
    )


class Enrolled(BaseModel):
    enrollment_id: str
    journey: str
    customer_id: str


class ExitRequest(BaseModel):
    reason: str = Field("admin", min_length=1, max_length=64)


class Exited(BaseModel):
    enrollment_id: str
    reason: str


async def _optional_body(request: Request, model: type[BaseModel]) -> Any:
    state = api_state(request)
    raw = inflate(
        await read_raw(request, state.max_body),
        request.headers.get("content-encoding", ""),
        state.max_body,
    )
    data = parse_json(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _enroll(state: ApiState, body: EnrollRequest) -> Enrolled:
    rt = state.runtime
    if body.journey not in rt.registry.current:
        raise ApiError(404, f"no journey named {body.journey!r}", field="journey")
    with state.reader.connect() as conn:
        status = conn.execute(
            select(t.journeys.c.status).where(t.journeys.c.name == body.journey)
        ).scalar_one_or_none()
        erased = conn.execute(
            select(t.customers.c.erased_at).where(t.customers.c.id == body.userId)
        ).scalar_one_or_none()
    if status == "paused":
        raise ApiError(409, f"journey {body.journey!r} is paused; resume it first")
    if erased is not None:
        raise ApiError(409, "this customer was erased", field="userId")
    try:
        eid = rt.engine.enroll(
            body.journey,
            body.userId,
            key=body.key,
            context=body.properties,
            cause=f"api:{body.messageId}" if body.messageId else None,
        )
    except EngineError as exc:
        raise ApiError(404, str(exc), field="journey") from None
    if eid is None:
        raise ApiError(
            409,
            "not enrolled: a live enrollment with this key exists or the journey's re-entry "
            "policy refuses it",
        )
    return Enrolled(enrollment_id=eid, journey=body.journey, customer_id=body.userId)


def _body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


@router.post(
    "/enroll",
    response_model=Enrolled,
    status_code=201,
    summary="Enroll a customer by hand",
    responses={404: {"description": "Unknown journey"}, 409: {"description": "Refused"}},
    openapi_extra=_body_doc(EnrollRequest),
)
async def enroll(request: Request) -> Enrolled:
    body = await _optional_body(request, EnrollRequest)
    return await run_in_threadpool(_enroll, api_state(request), body)


def _exit(state: ApiState, enrollment_id: str, reason: str) -> Exited:
    rt = state.runtime
    if not rt.engine.cancel(enrollment_id, reason):
        with state.reader.connect() as conn:
            found = conn.execute(
                select(t.enrollments.c.status).where(t.enrollments.c.id == enrollment_id)
            ).scalar_one_or_none()
        if found is None:
            raise ApiError(404, f"no enrollment {enrollment_id!r}")
        raise ApiError(409, f"enrollment {enrollment_id!r} has already ended")
    return Exited(enrollment_id=enrollment_id, reason=reason)


@router.post(
    "/enrollments/{enrollment_id}/exit",
    response_model=Exited,
    summary="End a live enrollment",
    description='Body optional: `{"reason": "..."}` (default `admin`). Paid audiences '
    "are left as on any exit.",
    responses={404: {"description": "No such enrollment"}, 409: {"description": "Ended"}},
    openapi_extra=_body_doc(ExitRequest, required=False),
)
async def exit_enrollment(enrollment_id: str, request: Request) -> Exited:
    body = await _optional_body(request, ExitRequest)
    return await run_in_threadpool(_exit, api_state(request), enrollment_id, body.reason)


DOC_MODELS = (EnrollRequest, ExitRequest)

"""Segment-spec ingest: ``POST /v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``
and ``/v1/batch``, so Segment's and RudderStack's client libraries send to parcours
unchanged (point their ``host`` at it).

The contract a sender relies on:

* **Authentication** is the write key as the HTTP Basic user name with an empty password
  (or, as Segment also allows and analytics.js does, ``writeKey`` in the body).
* **Durable before answered**: every event is written to the inbox inside one transaction
  before the 200; a retry is harmless because ``messageId`` deduplicates.
* **All or nothing**: a batch is validated whole before any of it is written; the first
  bad item is named in the 400 (``batch[3].userId``) and nothing is stored.
* **200 ``{"success": true}``** like Segment's tracking API. The design sketch said 202,
  but analytics-python 1.x (still widely deployed) only treats ``status_code == 200`` as
  success and would retry every batch; 200 works with every client version.
* ``group`` and ``alias`` calls are accepted and ignored (parcours has no use for them
  yet), so a client that sends them in a batch does not lose the batch's other events.
* Clock skew: as Segment does, when the batch carries ``sentAt`` each ``timestamp`` is
  corrected by the sender's clock offset (``receivedAt - (sentAt - timestamp)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator import ingest as inbox
from orchestrator.api.auth import basic_scheme, basic_user
from orchestrator.api.body import read_json
from orchestrator.api.errors import bad_request, field_path, unauthorized
from orchestrator.api.state import ApiState, api_state

router = APIRouter(tags=["ingest"])

CALL_TYPES = ("track", "identify", "page", "screen")
IGNORED_TYPES = ("group", "alias")
MIN_YEAR, MAX_YEAR = 1900, 9998


class SegmentEvent(inbox.EventIn):
    """``EventIn`` as Segment clients send it: ``null`` for an empty ``properties``,
    ``traits`` or ``context`` means empty."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# -- documentation models: what /docs and the OpenAPI schema show ------------------------
class _Call(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str | None = Field(None, max_length=255, description="Your id of the customer.")
    anonymousId: str | None = Field(
        None, max_length=255, description="A device/browser id; linked once identified."
    )
    messageId: str | None = Field(
        None, max_length=255, description="Unique per event; a repeat is a no-op."
    )
    timestamp: datetime | None = Field(None, description="When it happened (ISO 8601).")
    context: dict[str, Any] = Field(default_factory=dict)


class TrackCall(_Call):
    event: str = Field(max_length=255, description="The event name, e.g. cart_abandoned.")
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyCall(_Call):
    traits: dict[str, Any] = Field(default_factory=dict, description="Merged into the profile.")


class PageCall(_Call):
    name: str | None = Field(None, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)


class BatchItem(_Call):
    type: Literal["track", "identify", "page", "screen", "group", "alias"]
    event: str | None = Field(None, max_length=255)
    name: str | None = Field(None, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)


class BatchCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[BatchItem] = Field(description="At most http.max_batch_events items.")
    sentAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict, description="Applies to every item.")


class Success(BaseModel):
    success: bool = True


DOC_MODELS: tuple[type[BaseModel], ...] = (
    TrackCall,
    IdentifyCall,
    PageCall,
    BatchItem,
    BatchCall,
)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid payload: `field` names the first wrong input; nothing stored"},
    401: {"description": "Missing or unknown write key"},
    413: {"description": "Body larger than http.max_body_bytes (compressed or not)"},
    415: {"description": "Unsupported Content-Encoding"},
}


# -- validation ----------------------------------------------------------------------------
def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _message(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def to_event(
    item: Any,
    where: str,
    *,
    kind: str | None,
    shared_context: Mapping[str, Any],
    sent_at: datetime | None,
    received_at: datetime,
) -> inbox.EventIn | None:
    """One Segment call as a validated event; None for calls parcours ignores."""
    if not isinstance(item, dict):
        raise bad_request(f"{where or 'body'}: must be a JSON object", where or "body")
    data = dict(item)
    if kind is None:
        call = data.get("type")
        if call in IGNORED_TYPES:
            return None
        if call not in CALL_TYPES:
            allowed = ", ".join(CALL_TYPES + IGNORED_TYPES)
            raise bad_request(f"{where}.type: must be one of {allowed}", f"{where}.type")
        kind = str(call)
    data["type"] = kind
    if shared_context:
        own = data.get("context")
        if own is None or isinstance(own, dict):
            data["context"] = {**shared_context, **(own or {})}
    try:
        event = SegmentEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, str | int)]
        message = _message(first)
        if not loc:  # a model-level rule: name the field it is about
            loc = ["userId"] if "userId" in message else ["event"] if "event" in message else []
        field = field_path(loc, where) or where or "body"
        raise bad_request(f"{field}: {message}", field) from None
    if event.timestamp is not None:
        event.timestamp = _checked_time(event.timestamp, where, sent_at, received_at)
    return event


def _checked_time(
    ts: datetime, where: str, sent_at: datetime | None, received_at: datetime
) -> datetime:
    try:
        ts = ts.astimezone(UTC)
    except (OverflowError, ValueError):
        ts = datetime.min.replace(tzinfo=UTC)
    if not MIN_YEAR <= ts.year <= MAX_YEAR:
        field = field_path(["timestamp"], where)
        raise bad_request(f"{field}: must be between {MIN_YEAR} and {MAX_YEAR}", field)
    if sent_at is not None:
        try:
            corrected = received_at - (sent_at - ts)
        except OverflowError:
            return ts
        if MIN_YEAR <= corrected.year <= MAX_YEAR:
            return corrected
    return ts


def _sent_at(value: Any) -> datetime | None:
    parsed = _parse_time(value)
    if parsed is None:
        return None
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if MIN_YEAR <= parsed.year <= MAX_YEAR else None


def validate_calls(
    body: Any, *, kind: str | None, max_events: int, received_at: datetime
) -> list[inbox.EventIn]:
    """Every event of a request, or ApiError for the first bad one."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object", "body")
    sent_at = _sent_at(body.get("sentAt"))
    if kind is not None:
        event = to_event(
            body, "", kind=kind, shared_context={}, sent_at=sent_at, received_at=received_at
        )
        return [event] if event is not None else []
    items = body.get("batch")
    if not isinstance(items, list):
        raise bad_request("batch: must be a list of calls", "batch")
    if len(items) > max_events:
        raise bad_request(
            f"batch: {len(items)} events, at most {max_events} per request "
            "(http.max_batch_events); split the batch",
            "batch",
        )
    shared = body.get("context")
    shared = shared if isinstance(shared, dict) else {}
    events = []
    for i, item in enumerate(items):
        event = to_event(
            item,
            f"batch[{i}]",
            kind=None,
            shared_context=shared,
            sent_at=sent_at,
            received_at=received_at,
        )
        if event is not None:
            events.append(event)
    return events


# -- the endpoints -------------------------------------------------------------------------
def _store(state: ApiState, events: list[inbox.EventIn]) -> None:
    rt = state.runtime
    with state.writing() as conn:
        accepted, duplicates = inbox.record(conn, events, rt.clock.now())
    state.counters.ingested(accepted, duplicates)


async def ingest(request: Request, kind: str | None) -> Success:
    state = api_state(request)
    has_auth = "authorization" in request.headers
    if has_auth and not state.write_keys.matches(basic_user(request)):
        raise unauthorized("write key")
    body = await read_json(request, state.max_body)
    if not has_auth:
        key = body.get("writeKey") if isinstance(body, dict) else None
        if not isinstance(key, str) or not state.write_keys.matches(key):
            raise unauthorized("write key")
    events = validate_calls(
        body,
        kind=kind,
        max_events=state.runtime.settings.http.max_batch_events,
        received_at=state.runtime.clock.now(),
    )
    if events:
        await run_in_threadpool(_store, state, events)
    return Success()


_DOC = "Authenticate with the write key as the HTTP Basic user name (empty password)."


def _route(path: str, kind: str | None, model: type[BaseModel], summary: str) -> None:
    async def endpoint(request: Request) -> Success:
        return await ingest(request, kind)

    endpoint.__name__ = f"ingest_{kind or 'batch'}"
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        response_model=Success,
        summary=summary,
        description=_DOC,
        responses=_RESPONSES,
        openapi_extra=_body(model),
        dependencies=[Security(basic_scheme)],
    )


_route("/v1/track", "track", TrackCall, "Record an event (Segment track)")
_route("/v1/identify", "identify", IdentifyCall, "Set traits of a customer (Segment identify)")
_route("/v1/page", "page", PageCall, "Record a page view (Segment page)")
_route("/v1/screen", "screen", PageCall, "Record a screen view (Segment screen)")
_route("/v1/batch", None, BatchCall, "Record many calls at once (Segment batch)")

__all__ = ["DOC_MODELS", "router", "validate_calls"]

"""Validating events and writing them to the inbox: the one door events come in by, whether
from the HTTP API (Segment spec), the CLI or a simulation.

An event is durable once ``record`` returns; its ``messageId`` makes a retry harmless.
Bad input raises ``pydantic.ValidationError`` naming the field, and nothing is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, select

from orchestrator.db import tables as t
from orchestrator.db.sql import upsert
from orchestrator.notify import INBOX, notify

MAX_ID = 255
EventKind = Literal["track", "identify", "page", "screen"]


class EventIn(BaseModel):
    """One event with Segment's field names (``userId``, ``messageId``, ``properties``...)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=True)

    type: EventKind = "track"
    user_id: str | None = Field(None, alias="userId", max_length=MAX_ID)
    anonymous_id: str | None = Field(None, alias="anonymousId", max_length=MAX_ID)
    message_id: str | None = Field(None, alias="messageId", max_length=MAX_ID)
    event: str | None = Field(None, max_length=MAX_ID)
    name: str | None = Field(None, max_length=MAX_ID)
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None

    @field_validator("user_id", "anonymous_id", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a string")
        return str(v) if isinstance(v, int) else v

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _required(self) -> EventIn:
        if not self.user_id and not self.anonymous_id:
            raise ValueError("userId or anonymousId is required")
        if self.type == "track" and not self.event:
            raise ValueError("event (the event name) is required for track")
        return self

    @property
    def event_name(self) -> str | None:
        if self.type == "track":
            return self.event
        if self.type in ("page", "screen"):
            return f"{self.type}_viewed"
        return None


def record(conn: Connection, events: Sequence[EventIn], now: datetime) -> tuple[int, int]:
    """Write validated events to the inbox; return (accepted, duplicates by messageId)."""
    if not events:
        return 0, 0
    links = [
        {"anonymous_id": e.anonymous_id, "customer_id": e.user_id, "linked_at": now}
        for e in events
        if e.user_id and e.anonymous_id
    ]
    upsert(conn, t.anonymous_ids, links, keys=["anonymous_id"], update=[])
    anon_only = {e.anonymous_id for e in events if not e.user_id and e.anonymous_id}
    linked: dict[str, str] = {}
    if anon_only:
        rows = conn.execute(
            select(t.anonymous_ids.c.anonymous_id, t.anonymous_ids.c.customer_id).where(
                t.anonymous_ids.c.anonymous_id.in_(sorted(anon_only))
            )
        )
        linked = {r.anonymous_id: r.customer_id for r in rows}
    rows_out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for e in events:
        mid = e.message_id or str(uuid.uuid4())
        if mid in seen:
            continue
        seen.add(mid)
        customer = e.user_id or linked.get(e.anonymous_id or "") or f"anon:{e.anonymous_id}"
        props = dict(e.properties)
        if e.type in ("page", "screen") and e.name:
            props.setdefault("name", e.name)
        rows_out.append(
            {
                "message_id": mid,
                "kind": "identify"
                if e.type == "identify"
                else ("page" if e.type in ("page", "screen") else "track"),
                "name": e.event_name,
                "customer_id": customer,
                "anonymous_id": e.anonymous_id,
                "properties": props,
                "traits": e.traits or dict(e.context.get("traits") or {})
                if e.type == "identify"
                else dict(e.traits),
                "context": e.context,
                "occurred_at": e.timestamp or now,
                "received_at": now,
            }
        )
    before = _count_existing(conn, [r["message_id"] for r in rows_out])
    upsert(conn, t.events, rows_out, keys=["message_id"], update=[])
    notify(conn, INBOX)
    accepted = len(rows_out) - before
    return accepted, len(events) - accepted


def _count_existing(conn: Connection, ids: list[str]) -> int:
    found = 0
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        found += len(
            conn.execute(
                select(t.events.c.message_id).where(t.events.c.message_id.in_(chunk))
            ).all()
        )
    return found

"""Small helpers shared by the webhook receivers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from channels.base import InboundRequest


def header(request: InboundRequest, name: str) -> str | None:
    """A header by case-insensitive name (the HTTP layer lower-cases, but be forgiving)."""
    wanted = name.lower()
    for key, value in request.headers.items():
        if key.lower() == wanted:
            return value
    return None


def json_payload(request: InboundRequest) -> Any:
    try:
        return json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"webhook body is not JSON: {exc}") from exc


def from_unix(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"bad timestamp {value!r}") from exc


def from_iso(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"bad timestamp {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def text_or_none(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return str(value) if value not in (None, "") else None

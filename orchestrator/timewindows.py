"""Local time windows in a customer's own timezone: delays "until 09:00-17:00 on weekdays"
and quiet hours ("no sends 21:00-08:00").

All arithmetic goes through ``zoneinfo`` so daylight-saving changes move the UTC instant,
not the local time the designer wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from journeys.schema import WEEKDAYS, parse_window

_SEARCH_DAYS = 9


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The customer's zone, or the fallback when unknown or invalid."""
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _inside(t: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # wraps past midnight


def is_inside(now: datetime, window: str, tz: ZoneInfo, days: Sequence[str] | None = None) -> bool:
    start, end = parse_window(window)
    local = now.astimezone(tz)
    if days is not None:
        # For a window that wraps midnight, the early-morning part belongs to the day before.
        day = local.date()
        if start > end and local.time() < end:
            day -= timedelta(days=1)
        if WEEKDAYS[day.weekday()] not in days:
            return False
    return _inside(local.time().replace(tzinfo=None), start, end)


def next_open(
    now: datetime, window: str, tz: ZoneInfo, days: Sequence[str] | None = None
) -> datetime:
    """``now`` if inside the window, else the next moment the window opens (UTC)."""
    if is_inside(now, window, tz, days):
        return now
    start, _ = parse_window(window)
    local = now.astimezone(tz)
    for offset in range(_SEARCH_DAYS):
        day = local.date() + timedelta(days=offset)
        if days is not None and WEEKDAYS[day.weekday()] not in days:
            continue
        candidate = datetime.combine(day, start, tzinfo=tz)
        # A start inside a DST gap: zoneinfo maps it past the gap; convert round-trip.
        candidate_utc = candidate.astimezone(UTC)
        if candidate_utc > now:
            return candidate_utc
    raise ValueError(f"window {window!r} on {days} never opens")  # pragma: no cover


def quiet_until(now: datetime, quiet_window: str, tz: ZoneInfo) -> datetime:
    """When a send that falls at ``now`` may go: now, or when the quiet window ends."""
    start, end = parse_window(quiet_window)
    if not _inside(now.astimezone(tz).time().replace(tzinfo=None), start, end):
        return now
    allowed = f"{end.strftime('%H:%M')}-{start.strftime('%H:%M')}"
    return next_open(now, allowed, tz)


def sticky_fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) for a customer: experiment arms stay sticky across
    processes and restarts without storing a random draw."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

"""Durations as designers write them: ``30s``, ``90m``, ``12h``, ``2d``, ``1w``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")

DURATION_HELP = "a duration is a number and a unit: 30s, 90m, 12h, 2d, 1w (or combined: 1d12h)"


def parse_duration(text: object) -> timedelta:
    """Parse a duration; raise ValueError saying what is valid."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {text!r}; {DURATION_HELP}")
    s = text.strip().replace(" ", "")
    if not _WHOLE.match(s):
        raise ValueError(f"invalid duration {text!r}; {DURATION_HELP}")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(s))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest designer-style spelling of ``value`` (``2d``, ``1d12h``, ``90m``)."""
    secs = int(value.total_seconds())
    if secs <= 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if secs >= size:
            n, secs = divmod(secs, size)
            parts.append(f"{n}{unit}")
    return "".join(parts)

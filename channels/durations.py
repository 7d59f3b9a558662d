"""Durations written the way journey designers write them: ``3d``, ``12h``, ``1d12h``.

Kept here (and not imported from ``journeys``) because ``channels`` must not depend on the
journey language; site templates carry a ``ttl`` that the site adapter turns into an
expiry, and that is the only duration the channel layer needs to understand.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)\s*([wdhms])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$")


def parse_duration(text: str) -> timedelta:
    """``"3d"`` -> 3 days; several parts add up (``"1d12h"``). Raises ``ValueError``."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: write a number and a unit, e.g. 30m, 12h, 3d or 2w"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)

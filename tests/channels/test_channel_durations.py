from __future__ import annotations

from datetime import timedelta

import pytest

from channels.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", timedelta(days=3)),
        ("12h", timedelta(hours=12)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        ("45m", timedelta(minutes=45)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "d", "3 days", "0h", "-1d"])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)

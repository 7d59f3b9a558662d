"""Durations as designers write them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journeys.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 2d ", timedelta(days=2)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("0d1h", timedelta(hours=1)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2 days", "invalid duration '2 days'; a duration is a number and a unit"),
        ("2", "invalid duration '2'"),
        ("d", "invalid duration 'd'"),
        ("1.5d", "invalid duration '1.5d'"),
        ("-1d", "invalid duration '-1d'"),
        ("2D", "invalid duration '2D'"),
        ("", "invalid duration ''"),
        ("0s", "must be longer than zero"),
        ("0d0h", "must be longer than zero"),
        (48, "expected a duration string, got 48"),
        (None, "expected a duration string, got None"),
    ],
)
def test_invalid(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert message in str(info.value)
    assert "30s, 90m, 12h, 2d, 1w" in str(info.value) or "zero" in message


def test_timedelta_passes_through() -> None:
    assert parse_duration(timedelta(hours=3)) == timedelta(hours=3)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=2), "2d"),
        (timedelta(days=7), "1w"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=61), "1m1s"),
        (timedelta(0), "0s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["30s", "90m", "12h", "2d", "1w", "1d12h", "3w4d5h6m7s"])
def test_format_round_trips(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value

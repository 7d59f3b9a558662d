"""During a database outage every request fails alike: the API answers each with 503 and
Retry-After, but logs the outage once per interval with a count, not once per request."""

from __future__ import annotations

from orchestrator.api.errors import _Every


def test_a_repeated_warning_is_let_through_once_per_interval_with_a_count() -> None:
    every = _Every(10.0)
    assert every.due(100.0) == 0  # the first failure is logged at once
    assert [every.due(100.0 + i) for i in range(1, 6)] == [None] * 5
    assert every.due(110.0) == 5  # the next line says how many were held back
    assert every.due(115.0) is None
    assert every.due(121.0) == 1

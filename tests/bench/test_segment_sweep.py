"""The sweep benchmark measures real work: a silent baseline, time's changes found, and
nothing announced twice."""

from __future__ import annotations

from pathlib import Path

from bench.segment_sweep import run


def test_the_sweeps_find_what_time_changed_and_nothing_twice(tmp_path: Path) -> None:
    rows = run(60, tmp_path)["rows"]
    first, later, again = (r["changes"] for r in rows)
    assert first == 0  # the baseline: memberships recorded, nobody announced
    assert later > 0
    assert again == 0

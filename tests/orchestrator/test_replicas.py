"""Several `parcours` worker processes on one PostgreSQL database keep every promise, and
killing them at random moments loses and duplicates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.orchestrator.replicas import scenario

pytestmark = pytest.mark.postgres


def test_three_workers_keep_the_invariants_and_match_a_single_worker(
    postgres_url: str, tmp_path: Path
) -> None:
    from tests.conftest import create_pg_database, drop_pg_database

    many = scenario.run(postgres_url, tmp_path / "three", workers=3, customers=90, batch=10)
    scenario.check_invariants(many, 90, resends_allowed=False)
    assert len({w for w, *_ in many.sends}) == 3  # the work really was shared

    single_url = create_pg_database()
    try:
        one = scenario.run(single_url, tmp_path / "one", workers=1, customers=90)
    finally:
        drop_pg_database(single_url)
    scenario.check_invariants(one, 90, resends_allowed=False)
    assert scenario.final_states(many) == scenario.final_states(one)
    assert {d.idempotency_key for d in many.deliveries} == {
        d.idempotency_key for d in one.deliveries
    }


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    out = scenario.run(
        postgres_url,
        tmp_path / "kill",
        workers=3,
        customers=240,
        batch=20,
        kill_every=0.4,
        max_kills=6,
    )
    assert out.kills >= 3
    # A killed sender's lease runs out and the row is sent again, with the same key.
    scenario.check_invariants(out, 240, resends_allowed=True)

"""Seeding benchmark databases with customers resting on cart-recovery's ``wait_email``
(the email sent, a 2-day timer running): the state most timers are in. Rows are written
by the engine's own ``Work.flush``, so the seed can never drift from the real schema."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any


def resting_on_wait_email(
    db: Any,
    version: str,
    ids: Iterable[int],
    wake: Callable[[int], datetime],
    now: datetime,
    *,
    prefix: str = "e",
    chunk: int = 50_000,
) -> None:
    """Insert one live enrollment per id, waking at ``wake(id)``, in chunks."""
    from orchestrator.model import Enrollment
    from orchestrator.work import Work

    pending = list(ids)
    for start in range(0, len(pending), chunk):
        work = Work(now)
        for i in pending[start : start + chunk]:
            eid = f"{prefix}{i:09d}"
            work.new[eid] = Enrollment(
                id=eid,
                journey="cart-recovery",
                version=version,
                customer_id=f"{prefix}c{i:09d}",
                key="k",
                state="wait_email",
                status="live",
                entered_at=now,
                step_entered_at=now,
                wake_at=wake(i),
                wake_trigger="timeout",
                visits={"reminder_email": 1, "wait_email": 1},
            )
        with db.begin() as conn:
            work.flush(conn)

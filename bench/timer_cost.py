"""The cost of a fired timer as the number of pending timers grows: 10k, 100k, 1M.

Timers are rows (``enrollments.wake_at``) found through a partial index on live rows, so
firing one should cost the same whether ten thousand or a million others are waiting. Each
size gets its own database: the pending timers (far in the future) are written with raw
SQL, then 5,000 due timers (cart-recovery customers resting on ``wait_email``) are fired by
the engine and timed.

    python -m bench.timer_cost                      # SQLite
    python -m bench.timer_cost --postgres           # throwaway PostgreSQL database
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from bench.engine_throughput import _pg_database, _settings
from bench.seed import resting_on_wait_email

DUE = 5000


def _fill(db: Any, version: str, pending: int, now: datetime, round_no: int) -> None:
    """Round 0: ``pending`` timers a year out plus DUE due now; later rounds: DUE more."""
    later = now + timedelta(days=365)
    prefix = f"r{round_no}-"
    resting_on_wait_email(
        db,
        version,
        range(DUE + (pending if round_no == 0 else 0)),
        lambda i: now if i < DUE else later + timedelta(seconds=i),
        now,
        prefix=prefix,
    )


def measure(url: str, pending: int, repeats: int = 3) -> dict[str, Any]:
    from orchestrator.clock import VirtualClock
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    db = open_engine(url)
    upgrade(db)
    clock = VirtualClock()
    rt = build_runtime(_settings(url), clock=clock, db=db, channels={})
    version = rt.registry.current["cart-recovery"].version
    times = []
    for r in range(repeats):
        _fill(db, version, pending, clock.now(), r)
        t0 = time.perf_counter()
        fired = 0
        while n := rt.engine.fire_due_timers(1000):
            fired += n
        times.append((time.perf_counter() - t0) / fired)
        assert fired == DUE, fired
    db.dispose()
    return {"pending": pending, "fired": DUE, "us_per_timer": round(median(times) * 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pending", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--postgres", action="store_true")
    args = p.parse_args()
    from bench.report import emit

    rows: list[dict[str, object]] = []
    for n in args.pending:
        if args.postgres:
            url, drop = _pg_database()
            try:
                r = measure(url, n)
            finally:
                drop()
        else:
            with tempfile.TemporaryDirectory() as d:
                r = measure(f"sqlite:///{Path(d) / 't.db'}", n)
        rows.append({"backend": "postgresql" if args.postgres else "sqlite", **r})
    base = float(rows[0]["us_per_timer"])  # type: ignore[arg-type]
    for row in rows:
        row["vs_smallest"] = f"{float(row['us_per_timer']) / base:.2f}x"  # type: ignore[arg-type]
    emit("timer_cost", rows, {"due_per_round": DUE, "journey": "cart-recovery wait_email"})


if __name__ == "__main__":
    main()

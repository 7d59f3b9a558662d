"""The cost of the segment sweep: re-evaluating time-dependent segments for every customer.

Segments that count events ("no order for 60 days") can change with time alone, so the
worker role re-evaluates them for every customer each ``workers.segment_sweep_interval``.
This measures what one sweep costs per customer, to choose that interval: a population
with an order history, three such segments, and a journey that starts on
``segment.entered``. Three sweeps: the first records every membership without announcing
(the baseline), the second (61 days later) announces the changes time made, the third
finds nothing new.

    python -m bench.segment_sweep --customers 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.engine_throughput import ROOT

SEGMENTS = {
    "lapsed": "days_since('order_completed') > 60",
    "dormant": "count('email.opened', within='30d') == 0",
    "cat_buyers": "count('order_completed', within='90d', "
    "where=\"properties.category == 'cat-litter'\") > 0",
}
JOURNEY = """
journey: lapsed-winback
entry:
  event: segment.entered
  where: properties.segment == 'lapsed'
steps:
  - id: miss_you
    type: send
    channel: email
    template: welcome
  - id: done
    type: exit
"""


def run(customers: int, directory: Path) -> dict[str, Any]:
    from sqlalchemy import insert

    from orchestrator.clock import VirtualClock
    from orchestrator.config import load_settings
    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    url = f"sqlite:///{directory / 'sweep.db'}"
    (directory / "journeys").mkdir()
    (directory / "journeys" / "lapsed-winback.yaml").write_text(JOURNEY)
    examples = ROOT / "journeys" / "examples"
    settings = load_settings(
        ROOT / "config" / "parcours.toml",
        database_url=url,
        journeys=[str(examples), str(directory / "journeys")],
        templates=str(examples / "templates"),
        segments=SEGMENTS,
    )
    db = open_engine(url)
    upgrade(db)
    clock = VirtualClock()
    rt = build_runtime(settings, clock=clock, db=db, channels={})
    now = clock.now()
    with db.begin() as conn:
        conn.execute(
            insert(t.customers),
            [
                {
                    "id": f"c{i:08d}",
                    "traits": {},
                    "consent": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(customers)
            ],
        )
        events = []
        for i in range(customers):
            for k, (name, days, category) in enumerate(
                (
                    ("order_completed", 10 + i % 50, "cat-litter" if i % 3 == 0 else "food"),
                    ("email.opened", 5 + i % 40, None),
                )
            ):
                at = now - timedelta(days=days)
                events.append(
                    {
                        "message_id": f"h{i}-{k}",
                        "kind": "track",
                        "name": name,
                        "customer_id": f"c{i:08d}",
                        "properties": {"category": category} if category else {},
                        "traits": {},
                        "context": {},
                        "occurred_at": at,
                        "received_at": at,
                        "processed_at": at,
                    }
                )
        conn.execute(insert(t.events), events)
    rows = []
    for label, advance in (("first", 0), ("61 days later", 61), ("again", 0)):
        clock.advance(timedelta(days=advance))
        t0 = time.perf_counter()
        changes = rt.engine.sweep_segments(clock.now())
        dt = time.perf_counter() - t0
        rows.append(
            {
                "sweep": label,
                "customers": customers,
                "changes": changes,
                "seconds": round(dt, 2),
                "us_per_customer": round(dt / customers * 1e6, 1),
            }
        )
    db.dispose()
    return {"rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=20_000)
    args = p.parse_args()
    from bench.report import emit

    with tempfile.TemporaryDirectory() as d:
        out = run(args.customers, Path(d))
    emit(
        "segment_sweep",
        out["rows"],
        {"segments": len(SEGMENTS), "backend": "sqlite", "page": 500},
    )


if __name__ == "__main__":
    main()

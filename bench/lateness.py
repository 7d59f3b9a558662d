"""Timeout lateness under load: how long after its ``wake_at`` a timer actually fires.

Real daemons (``parcours run --role worker``) on the real clock; timers of cart-recovery
customers resting on ``wait_email`` fall due at a steady rate (default 5,000 a second for
20 seconds). Lateness is the history line's time minus the timer's due time.

    python -m bench.lateness                          # SQLite, one daemon
    python -m bench.lateness --postgres --workers 2   # PostgreSQL, two daemons
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

from bench.engine_throughput import ROOT, _pg_database
from bench.seed import resting_on_wait_email


def _config(directory: Path, url: str) -> Path:
    examples = ROOT / "journeys" / "examples"
    text = (
        (ROOT / "config" / "parcours.toml")
        .read_text()
        .replace('database_url = "sqlite:///parcours.db"', f'database_url = "{url}"')
        .replace('"journeys/examples"', f'"{examples}"')
        .replace('templates = "journeys/examples/templates"', f'templates = "{examples}/templates"')
    )
    path = directory / "parcours.toml"
    path.write_text(text)
    return path


def run(url: str, workers: int, rate: int, seconds: int, directory: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from orchestrator.clock import SystemClock
    from orchestrator.config import load_settings
    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    db = open_engine(url)
    upgrade(db)
    config = _config(directory, url)
    rt = build_runtime(load_settings(config), clock=SystemClock(), db=db, channels={})
    version = rt.registry.current["cart-recovery"].version
    total = rate * seconds
    start = datetime.now(UTC) + timedelta(seconds=8 + 2 * workers)  # daemons start first
    resting_on_wait_email(
        db,
        version,
        range(total),
        lambda i: start + timedelta(seconds=i / rate),
        start,
        prefix="e",
    )
    env = {
        **os.environ,
        "PARCOURS_WORKERS__POLL_INTERVAL": "0.1",
        "PARCOURS_WORKERS__BATCH_SIZE": "1000",
        "PARCOURS_LOG_FORMAT": "json",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--role", "worker", "-c", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    h = t.history.c
    deadline = time.monotonic() + seconds + 120
    fired = 0
    try:
        while time.monotonic() < deadline:
            time.sleep(1)
            with db.connect() as conn:
                fired = conn.execute(
                    select(func.count()).where(h.trigger == "timeout")
                ).scalar_one()
            if fired >= total:
                break
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    with db.connect() as conn:
        rows = conn.execute(select(h.enrollment_id, h.at).where(h.trigger == "timeout")).all()
    late = []
    for enrollment, at in rows:
        due = start + timedelta(seconds=int(enrollment[1:]) / rate)
        late.append((at - due).total_seconds())
    db.dispose()
    q = quantiles(late, n=100)
    return {
        "timers": total,
        "fired": len(late),
        "rate_per_s": rate,
        "lateness_p50_s": round(q[49], 3),
        "lateness_p99_s": round(q[98], 3),
        "lateness_max_s": round(max(late), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--postgres", action="store_true")
    args = p.parse_args()
    from bench.report import emit

    with tempfile.TemporaryDirectory() as d:
        if args.postgres:
            url, drop = _pg_database()
            try:
                r = run(url, args.workers, args.rate, args.seconds, Path(d))
            finally:
                drop()
        else:
            r = run(
                f"sqlite:///{Path(d) / 'late.db'}", args.workers, args.rate, args.seconds, Path(d)
            )
    row: dict[str, object] = {
        "backend": "postgresql" if args.postgres else "sqlite",
        "workers": args.workers,
        **r,
    }
    emit(
        "lateness",
        [row],
        {"poll_interval_s": 0.1, "batch": 1000, "journey": "cart-recovery wait_email timeout"},
    )


if __name__ == "__main__":
    main()

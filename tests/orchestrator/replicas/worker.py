"""One replica: a worker process that follows the test's virtual-time phases.

The parent writes ``phase-K`` (the virtual time, ISO) into the run directory; every worker
sets its clock to it, drains the inbox, the timers and the outbox until idle, then writes
``done-K-<worker>``. Sends go to a sink channel that appends what it saw (worker, key,
start and end wall time) to ``sink-<worker>.log``, so the parent can prove that no
delivery was in flight in two workers at once.

    python -m tests.orchestrator.replicas.worker URL RUN_DIR WORKER_ID [BATCH]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from channels.base import ChannelKind, Delivery, Recipient, SendResult, SiteMessage
from orchestrator.clock import VirtualClock
from orchestrator.dispatcher import Dispatcher
from orchestrator.runtime import build_runtime
from tests.conftest import settings_for


class Sink:
    def __init__(self, name: str, kind: ChannelKind, medium: str, log: Path, worker: str):
        self.name = name
        self.kind: ChannelKind = kind
        self.medium = medium
        self.log = log
        self.worker = worker

    def _write(self, line: str) -> None:
        with self.log.open("a") as f:
            f.write(line + "\n")

    async def send(self, delivery: Delivery) -> SendResult:
        start = time.time_ns()
        await asyncio.sleep(0.002)  # a provider call takes a moment
        self._write(f"send {self.worker} {delivery.idempotency_key} {start} {time.time_ns()}")
        site = SiteMessage("banner", "x") if self.medium == "site" else None
        return SendResult(provider_message_id=delivery.idempotency_key, site_message=site)

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        for r in recipients:
            self._write(f"add {self.worker} {r.customer_id} {time.time_ns()} 0")

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        for r in recipients:
            self._write(f"remove {self.worker} {r.customer_id} {time.time_ns()} 0")

    async def aclose(self) -> None:
        return None


def main(argv: list[str]) -> None:
    url, run_dir, worker = argv[0], Path(argv[1]), argv[2]
    batch = int(argv[3]) if len(argv) > 3 else 50
    settings = settings_for(url)
    settings.workers.batch_size = batch
    clock = VirtualClock()
    log = run_dir / f"sink-{worker}.log"
    channels = {
        name: Sink(
            name,
            "paid" if conf.get("kind") == "paid" else "owned",
            str(conf.get("medium", "email")),
            log,
            worker,
        )
        for name, conf in settings.channels.items()
    }
    rt = build_runtime(settings, clock=clock, channels=dict(channels), sync=False)
    dispatcher = Dispatcher(
        rt.db, clock, rt.channels, rt.templates, rt.tracking, settings.dispatch, lease_seconds=3600
    )
    phase = 0
    ready = run_dir / f"ready-{worker}.tmp"
    ready.write_text(str(os.getpid()))
    ready.rename(run_dir / f"ready-{worker}")
    while True:
        marker = run_dir / f"phase-{phase}"
        if (run_dir / "stop").exists():
            return
        if not marker.exists():
            time.sleep(0.01)
            continue
        when = datetime.fromisoformat(marker.read_text())
        if when > clock.now():
            clock.set(when)
        while True:
            n = rt.engine.process_inbox(batch) + rt.engine.fire_due_timers(batch)
            n += asyncio.run(dispatcher.dispatch_once(batch))
            if n == 0:
                break
        done = run_dir / f"done-{phase}-{worker}.tmp"
        done.write_text("ok")
        done.rename(run_dir / f"done-{phase}-{worker}")
        phase += 1


if __name__ == "__main__":
    main(sys.argv[1:])

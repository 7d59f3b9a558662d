"""``parcours run``: the HTTP API and the workers in one process, or split by ``--role``.

APScheduler drives the workers as interval jobs (``max_instances=1``, ``coalesce=True``)
and the cron entries of scheduled journeys. It never holds a job per customer: timers are
rows (``enrollments.wake_at``), claimed in batches by the timer job, so any number of
processes can share them.

SIGTERM/SIGINT stop taking new batches, let the batch in hand finish and commit, close
channels and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from orchestrator.dispatcher import Dispatcher
from orchestrator.notify import INBOX, OUTBOX, Listener
from orchestrator.policies import Policies
from orchestrator.runtime import Runtime

Role = Literal["all", "api", "worker"]
log = structlog.get_logger("parcours.daemon")


class Workers:
    """The periodic jobs. Each job drains its queue (batch after batch) while there is work,
    then yields until the next tick."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.stopping = False
        #: Set while no dispatch batch is in flight: shutdown waits for it, since
        #: APScheduler's shutdown(wait=True) does not wait for coroutine jobs.
        self.dispatch_idle = asyncio.Event()
        self.dispatch_idle.set()
        s = runtime.settings
        self.dispatcher = Dispatcher(
            runtime.db,
            runtime.clock,
            runtime.channels,
            runtime.templates,
            runtime.tracking,
            s.dispatch,
            lease_seconds=s.workers.lease_seconds,
            policies=Policies.from_settings(s),
        )

    def _drain(self, step: Callable[[], int], what: str) -> int:
        total = 0
        while not self.stopping:
            n = step()
            total += n
            if n == 0:
                break
        if total:
            log.info(f"{what} processed", count=total)
        return total

    def inbox(self) -> int:
        return self._drain(self.rt.engine.process_inbox, "events")

    def timers(self) -> int:
        return self._drain(self.rt.engine.fire_due_timers, "timers")

    async def dispatch(self) -> int:
        self.dispatch_idle.clear()
        try:
            total = await self.dispatcher.drain(
                self.rt.settings.workers.batch_size, stop=lambda: self.stopping
            )
        finally:
            self.dispatch_idle.set()
        if total:
            log.info("deliveries handled", count=total)
        return total

    def scheduled(self, journey: str) -> None:
        n = self.rt.engine.enroll_scheduled(journey, self.rt.clock.now())
        log.info("scheduled entry", journey=journey, enrolled=n)

    def refresh(self) -> None:
        with self.rt.db.connect() as conn:
            self.rt.registry.refresh_paused(conn)


def make_scheduler(workers: Workers) -> AsyncIOScheduler:
    rt = workers.rt
    every = rt.settings.workers.poll_interval
    sched = AsyncIOScheduler(timezone="UTC")
    opts: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    sched.add_job(workers.inbox, "interval", seconds=every, id="inbox", **opts)
    sched.add_job(workers.timers, "interval", seconds=every, id="timers", **opts)
    sched.add_job(workers.dispatch, "interval", seconds=every, id="dispatch", **opts)
    sched.add_job(workers.refresh, "interval", seconds=5, id="refresh", **opts)
    for v in rt.journeys:
        entry = v.definition.entry
        if entry.schedule:
            trigger = CronTrigger.from_crontab(entry.schedule, timezone=entry.timezone)
            sched.add_job(
                workers.scheduled, trigger, args=[v.name], id=f"schedule:{v.name}", **opts
            )
    return sched


async def serve(runtime: Runtime, role: Role = "all") -> None:
    """Run until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    workers = Workers(runtime)
    scheduler = make_scheduler(workers) if role in ("all", "worker") else None
    server = None
    if role in ("all", "api"):
        server = _http_server(runtime)

    def _signal() -> None:
        log.info("stopping: finishing the batch in hand")
        workers.stopping = True
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _signal)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: dump stacks
    listener = None
    if scheduler is not None:
        scheduler.start()
        if runtime.db.dialect.name == "postgresql":
            listener = _listen(runtime, scheduler, loop)
        log.info(
            "workers started",
            interval=runtime.settings.workers.poll_interval,
            journeys=sorted(runtime.registry.current),
        )
    try:
        if server is not None:
            server.install_signal_handlers = lambda: None
            await server.serve()
        else:
            await stop.wait()
    finally:
        workers.stopping = True
        if listener is not None:
            listener.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
            # Let a running dispatch job finish and record its batch.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(workers.dispatch_idle.wait(), timeout=15)
        await runtime.aclose()
        log.info("stopped")


def _listen(
    runtime: Runtime, scheduler: AsyncIOScheduler, loop: asyncio.AbstractEventLoop
) -> Listener:
    """Run the inbox or dispatch job as soon as another process announces work."""
    jobs = {INBOX: "inbox", OUTBOX: "dispatch"}

    def wake(queue: str) -> None:
        job_id = jobs.get(queue)
        if job_id is None:
            return

        def now() -> None:
            job = scheduler.get_job(job_id)
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))

        loop.call_soon_threadsafe(now)

    listener = Listener(runtime.settings.database_url, wake)
    listener.start()
    return listener


def _http_server(runtime: Runtime) -> Any:
    """The uvicorn server for the HTTP API, or None while the API is not installed."""
    try:
        import importlib

        import uvicorn

        create_app = importlib.import_module("orchestrator.api.app").create_app
    except ImportError:
        log.warning("HTTP API not available; running workers only")
        return None
    http = runtime.settings.http
    config = uvicorn.Config(
        create_app(runtime),
        host=http.host,
        port=http.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    return uvicorn.Server(config)


def run(runtime: Runtime, role: Role = "all") -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(runtime, role))

"""``parcours run``: the HTTP API and the workers in one process, or split by ``--role``.

APScheduler drives the workers as interval jobs (``max_instances=1``, ``coalesce=True``)
and the cron entries of scheduled journeys. It never holds a job per customer: timers are
rows (``enrollments.wake_at``), claimed in batches by the timer job, so any number of
processes can share them.

SIGTERM/SIGINT stop taking new batches, let the batch in hand finish and commit, close
channels and exit 0.

A database that goes away (PostgreSQL restarted or failed over, connections cut, SQLite
locked past its busy timeout) is an outage to ride out, not a crash: the jobs log it once,
back off, and resume when it answers again. Nothing is lost because every step is a
transaction that either committed or will be done again.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from journeys.durations import parse_duration
from orchestrator.dispatcher import Dispatcher, database_unavailable
from orchestrator.notify import INBOX, OUTBOX, Listener
from orchestrator.policies import Policies
from orchestrator.runtime import Runtime

Role = Literal["all", "api", "worker"]
log = structlog.get_logger("parcours.daemon")


class DatabaseHealth:
    """Whether the workers can reach the database. The first failure is logged once with
    what happened; the jobs then pause with exponential backoff (from ``first`` to
    ``longest`` seconds, a reminder every ``remind`` seconds) and the first success logs
    the recovery with how long it lasted. Called from the scheduler's threads."""

    def __init__(self, first: float, longest: float = 5.0, remind: float = 60.0) -> None:
        self.first = first
        self.longest = max(first, longest)
        self.remind = remind
        self.down_since: float | None = None
        self._delay = first
        self._retry_at = 0.0
        self._reminded = 0.0
        self._recovered_at = 0.0
        self._lock = threading.Lock()

    def may_try(self) -> bool:
        with self._lock:
            return self.down_since is None or time.monotonic() >= self._retry_at

    def retry_now(self) -> None:
        with self._lock:
            self._retry_at = 0.0

    def failed(self, job: str, exc: BaseException, started: float) -> None:
        """``job``, started at ``started`` (``time.monotonic()``), failed with ``exc``."""
        now = time.monotonic()
        error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        with self._lock:
            if self.down_since is None and started < self._recovered_at:
                return  # began before the recovery another job saw: not a new outage
            if self.down_since is None:
                self.down_since = self._reminded = now
                self._delay = self.first
                log.warning(
                    "database unavailable: workers pause and retry",
                    job=job,
                    error=error,
                    retry_in=round(self._delay, 1),
                )
            else:
                self._delay = min(self._delay * 2, self.longest)
                if now - self._reminded >= self.remind:
                    self._reminded = now
                    log.warning(
                        "database still unavailable",
                        down_seconds=round(now - self.down_since, 1),
                        error=error,
                    )
            self._retry_at = now + self._delay

    def succeeded(self) -> None:
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is not None:
                self._recovered_at = time.monotonic()
                down = self._recovered_at - self.down_since
                self.down_since = None
                log.info("database available again: workers resume", down_seconds=round(down, 1))


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
        self.health = DatabaseHealth(first=s.workers.poll_interval)
        #: Each scheduled journey's cron trigger (set by ``make_scheduler``).
        self.triggers: dict[str, CronTrigger] = {}
        #: Runs a job once after a delay (set by ``make_scheduler``): retries of cron runs.
        self.later: Callable[[Callable[..., None], list[Any], float], None] | None = None
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

    def _guarded(self, job: str, work: Callable[[], int]) -> int:
        """Run a job unless the database is known to be away; an outage ends the job
        quietly (the health tracker logs it) instead of a traceback per job per tick."""
        if not self.health.may_try():
            return 0
        started = time.monotonic()
        try:
            n = work()
        except Exception as exc:
            return self._outage(job, exc, started)
        self.health.succeeded()
        return n

    async def _aguarded(self, job: str, work: Callable[[], Awaitable[int]]) -> int:
        """``_guarded`` for the coroutine jobs (dispatch)."""
        if not self.health.may_try():
            return 0
        started = time.monotonic()
        try:
            n = await work()
        except Exception as exc:
            return self._outage(job, exc, started)
        self.health.succeeded()
        return n

    def _outage(self, job: str, exc: Exception, started: float) -> int:
        """A job's failure: an unreachable database is an outage to ride out (nothing done
        this tick); anything else is a bug and is raised."""
        if not database_unavailable(exc):
            raise exc
        self.health.failed(job, exc, started)
        return 0

    def inbox(self) -> int:
        return self._guarded("inbox", lambda: self._drain(self.rt.engine.process_inbox, "events"))

    def timers(self) -> int:
        return self._guarded(
            "timers", lambda: self._drain(self.rt.engine.fire_due_timers, "timers")
        )

    async def dispatch(self) -> int:
        return await self._aguarded("dispatch", self._dispatch)

    async def _dispatch(self) -> int:
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

    #: How long a scheduled entry waits before it tries again after a database outage.
    SCHEDULE_RETRY_SECONDS = 30.0

    def scheduled(self, journey: str, fired_at: datetime | None = None) -> None:
        """A cron entry. Unlike the queue jobs it has no backlog to catch up from: a run
        lost to an outage would skip that day's entry. So it is not gated on the outage
        backoff, and a run that meets one is retried later with the same ``fired_at``
        (hence the same enrollment ids; customers enrolled before the outage stay
        enrolled once)."""
        trigger = self.triggers.get(journey)
        now = self.rt.clock.now()
        fired = fired_at or (cron_slot(trigger, now) if trigger else now)
        try:
            n = self.rt.engine.enroll_scheduled(journey, fired)
        except Exception as exc:
            if not database_unavailable(exc) or self.stopping:
                raise
            self.health.failed(f"schedule:{journey}", exc, time.monotonic())
            log.warning(
                "scheduled entry postponed: database unavailable",
                journey=journey,
                fired_at=fired.isoformat(),
                retry_in_s=self.SCHEDULE_RETRY_SECONDS,
            )
            if self.later is not None:
                self.later(self.scheduled, [journey, fired], self.SCHEDULE_RETRY_SECONDS)
            return
        self.health.succeeded()
        log.info("scheduled entry", journey=journey, enrolled=n)

    def segments(self) -> None:
        engine, clock = self.rt.engine, self.rt.clock
        self._guarded(
            "segments", lambda: engine.sweep_segments(clock.now(), stop=lambda: self.stopping)
        )

    def refresh(self) -> None:
        def read() -> int:
            with self.rt.db.connect() as conn:
                self.rt.registry.refresh_paused(conn)
            return 0

        self._guarded("refresh", read)


def cron_slot(trigger: CronTrigger, now: datetime, lookback: float = 3600.0) -> datetime:
    """The fire a cron job run belongs to: the trigger's latest fire time at or before
    ``now`` (within ``lookback`` seconds), not the moment the run happened to start. Every
    replica, and a run that started late because its thread was busy, so name the same
    fire and derive the same enrollment ids. Falls back to ``now``."""
    t = trigger.get_next_fire_time(None, now - timedelta(seconds=lookback))
    last: datetime | None = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last or now


def make_scheduler(workers: Workers) -> AsyncIOScheduler:
    rt = workers.rt
    every = rt.settings.workers.poll_interval
    sched = AsyncIOScheduler(timezone="UTC")
    opts: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    sched.add_job(workers.inbox, "interval", seconds=every, id="inbox", **opts)
    sched.add_job(workers.timers, "interval", seconds=every, id="timers", **opts)
    sched.add_job(workers.dispatch, "interval", seconds=every, id="dispatch", **opts)
    sched.add_job(workers.refresh, "interval", seconds=5, id="refresh", **opts)
    sweep = parse_duration(rt.settings.workers.segment_sweep_interval).total_seconds()
    # The first sweep a minute after start (not one interval later): a daemon restarted
    # more often than the interval would otherwise never sweep.
    first = datetime.now(UTC) + timedelta(seconds=min(sweep, 60.0))
    sched.add_job(
        workers.segments,
        "interval",
        seconds=sweep,
        id="segments",
        next_run_time=first,
        **opts,
    )

    def later(job: Callable[..., None], args: list[Any], seconds: float) -> None:
        at = datetime.now(UTC) + timedelta(seconds=seconds)
        sched.add_job(job, "date", run_date=at, args=args, misfire_grace_time=None)

    workers.later = later
    for v in rt.journeys:
        entry = v.definition.entry
        if entry.schedule:
            trigger = CronTrigger.from_crontab(entry.schedule, timezone=entry.timezone)
            workers.triggers[v.name] = trigger
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
        if stop.is_set():  # a second signal while stopping changes nothing
            return
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
            listener = _listen(runtime, scheduler, loop, workers.health)
            _warn_without_autovacuum(runtime)
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


def _warn_without_autovacuum(runtime: Runtime) -> None:
    """The inbox, timers and outbox are queues: every claim turns rows into dead versions
    that only (auto)vacuum clears. Without it those tables and their indexes grow forever
    and claims slow down, so say so at start-up, with what to do."""
    try:
        with runtime.db.connect() as conn:
            setting = conn.exec_driver_sql("SHOW autovacuum").scalar()
    except Exception as exc:  # a warning must not stop the daemon
        log.warning("could not read the autovacuum setting", error=str(exc))
        return
    if setting != "on":
        log.warning(
            "autovacuum is off on this PostgreSQL server: the events, enrollments and "
            "deliveries tables keep every dead row and claims slow down as they grow; "
            "turn it on (autovacuum = on in postgresql.conf) or VACUUM ANALYZE them "
            "regularly"
        )


def _listen(
    runtime: Runtime,
    scheduler: AsyncIOScheduler,
    loop: asyncio.AbstractEventLoop,
    health: DatabaseHealth,
) -> Listener:
    """Run the inbox or dispatch job as soon as another process announces work."""
    jobs = {INBOX: "inbox", OUTBOX: "dispatch"}

    def wake(queue: str) -> None:
        job_id = jobs.get(queue)
        if job_id is None:
            return
        health.retry_now()  # a notification proves the database answers again

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

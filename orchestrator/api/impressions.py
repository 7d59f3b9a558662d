"""Site-message impressions, written in batches behind the request.

``GET /v1/site/messages`` runs while a shop renders a page. Recording its ``site.viewed``
impressions in the request would put a write transaction (on SQLite: a wait for the one
write lock, behind the workers' batches) on the page's critical path. Instead the request
hands its impressions to an :class:`ImpressionBuffer` and answers at once; the buffer
writes everything it holds in one transaction every ``http.impression_flush_seconds``
(0.2 s by default), sooner when ``max_rows`` are waiting, and on shutdown (the app's
lifespan).

The trade-off, on purpose: a process that dies without shutting down (``kill -9``, power
loss) loses the impressions of its last interval. Impressions are counts that feed
reports and "seen but not clicked" paths, not promises made to anyone, and a lost one is
recorded again on the customer's next page view of another day. Everything that moves a
customer on a promise (clicks, dismissals, ingested events) is still written before the
API answers.

A failed write (the database unreachable) keeps the rows and retries on the next
interval; at most ``limit`` rows wait, newer ones are dropped and counted, so a database
outage cannot grow the process without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from orchestrator import ingest as inbox
from orchestrator.api.recording import erased_among, internal_event, message_id

if TYPE_CHECKING:
    from orchestrator.api.state import ApiState

log = structlog.get_logger("parcours.api")


@dataclass(frozen=True, slots=True)
class Impression:
    """One view of one site message, as the request saw it."""

    customer_id: str
    delivery_key: str
    slot: str
    channel: str
    day: str  # the UTC day, ``YYYY-MM-DD``: one impression per message and day
    at: datetime


#: Writes impressions in one transaction; returns how many were new (not duplicates).
Writer = Callable[[list[Impression]], int]


class ImpressionBuffer:
    """Impressions waiting to be written; owned by the event loop that serves the API.

    ``add`` is called on the loop's thread only (the site endpoint runs there); the write
    itself runs in a worker thread so the loop keeps serving pages while it commits. One
    write is in flight at a time: they take the same database lock anyway.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        interval: float = 0.2,
        max_rows: int = 1000,
        limit: int = 100_000,
    ) -> None:
        self._writer = writer
        self.interval = interval
        self.max_rows = max_rows
        self.limit = limit
        self._pending: list[Impression] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Impressions written (new rows), and dropped because ``limit`` rows were waiting.
        self.written = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, impressions: Iterable[Impression]) -> None:
        """Queue impressions; the write happens within ``interval`` seconds."""
        room = self.limit - len(self._pending)
        batch = list(impressions)
        if len(batch) > room:
            self.dropped += len(batch) - max(room, 0)
            batch = batch[: max(room, 0)]
        if not batch:
            return
        self._pending.extend(batch)
        if self._closed:
            return  # aclose() is writing what is left; it takes these too
        if len(self._pending) >= self.max_rows:
            self._start()
        elif self._timer is None and self._task is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and self._pending:
            self._task = asyncio.get_running_loop().create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        try:
            await self._write_pending()
        finally:
            self._task = None
        if self._pending and not self._closed:
            # More arrived during the write (or it failed): the next write after an
            # interval, so a failing database is not hammered.
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._start)

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.written += await asyncio.to_thread(self._writer, batch)
        except Exception as exc:
            log.warning(
                "site impressions not written; retrying",
                rows=len(batch),
                error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            keep = batch[: self.limit]
            self.dropped += len(batch) - len(keep)
            self._pending = keep + self._pending[: self.limit - len(keep)]

    async def flush(self) -> None:
        """Write everything queued so far (after a write already in flight)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        self._start()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Write what is left; called when the API shuts down. One attempt: a database
        that is down at shutdown loses the last interval, as a crash would."""
        self._closed = True
        await self.flush()
        if self._pending:
            self.dropped += len(self._pending)
            log.warning("site impressions lost at shutdown", rows=len(self._pending))
            self._pending = []


def write_impressions(state: ApiState, batch: list[Impression]) -> int:
    """Record ``batch`` as ``site.viewed`` events in one transaction; return how many were
    new. The ``messageId`` is ``site.viewed:<delivery>:<day>``, so a view another process
    (or an earlier run) already recorded is a duplicate the inbox ignores. Customers
    erased since the view are skipped: nothing is recorded about a forgotten person."""
    now = state.runtime.clock.now()
    with state.writing() as conn:
        erased = erased_among(conn, {i.customer_id for i in batch})
        events = [
            internal_event(
                customer_id=i.customer_id,
                name="site.viewed",
                message=message_id("site.viewed", i.delivery_key, i.day),
                occurred_at=i.at,
                properties={"delivery_key": i.delivery_key, "slot": i.slot, "channel": i.channel},
            )
            for i in batch
            if i.customer_id not in erased
        ]
        accepted, _ = inbox.record(conn, events, now)
    if accepted:
        state.counters.reacted("site.viewed", accepted)
    return accepted

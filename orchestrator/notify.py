"""Wake-ups across processes on PostgreSQL: LISTEN/NOTIFY.

Writers send ``NOTIFY parcours, '<queue>'`` inside their transaction (PostgreSQL delivers
it only on commit); every daemon listens on a dedicated connection and runs the matching
worker at once instead of waiting for the next poll. Polling remains the fallback, so a
lost notification or SQLite (which has none) only costs latency, never work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

CHANNEL = "parcours"
INBOX = "inbox"
OUTBOX = "outbox"
log = structlog.get_logger("parcours.notify")


def notify(conn: Connection, queue: str) -> None:
    """Announce new work in ``queue`` when the transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :queue)"), {"channel": CHANNEL, "queue": queue}
        )


class Listener:
    """A background thread holding ``LISTEN parcours``; calls ``on_work(queue)``."""

    def __init__(self, url: str, on_work: Callable[[str], None]) -> None:
        u = make_url(url)
        self.dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_work = on_work
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parcours-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if lost:  # work announced while we were away was not heard: look now
                        log.info("listener reconnected")
                        lost = False
                        self.on_work(INBOX)
                        self.on_work(OUTBOX)
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self.on_work(n.payload)
            except psycopg.Error as exc:  # connection cut: reconnect after a pause
                if not lost:  # once per outage; polling carries on meanwhile
                    error = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    log.warning("listener lost its connection; reconnecting", error=error)
                lost = True
                self._stop.wait(1.0)

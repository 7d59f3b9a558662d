"""What the API keeps per application: the runtime, key rings, the read-only database
engine, webhook receivers and small caches. Stored on ``app.state.parcours``; endpoints
fetch it with :func:`api_state`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy import Engine as SqlEngine
from starlette.requests import Request

from orchestrator.api.auth import KeyRing
from orchestrator.api.impressions import ImpressionBuffer, write_impressions
from orchestrator.api.site_reads import SqliteLiveMessages
from orchestrator.runtime import Runtime


def read_engine(db: SqlEngine) -> SqlEngine:
    """An engine for read-only requests.

    The runtime's SQLite engine opens every transaction with ``BEGIN IMMEDIATE`` (right
    for writers: no lock upgrades, no deadlocks), which would make every read take the
    write lock too. In WAL mode readers need no lock at all, so reads go through a second
    engine whose connections run each SELECT in autocommit. PostgreSQL has no such issue:
    the runtime's engine is shared.
    """
    if db.dialect.name != "sqlite" or db.url.database in (None, "", ":memory:"):
        return db
    engine = create_engine(
        db.url,
        connect_args={"timeout": 30, "isolation_level": None},
        pool_size=20,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    return engine


def site_reader(db: SqlEngine) -> SqliteLiveMessages | None:
    """The ``sqlite3`` reader of live site messages for a SQLite file, else None (the
    SQLAlchemy read serves PostgreSQL and in-memory SQLite)."""
    url = db.url
    if db.dialect.name != "sqlite" or url.database in (None, "", ":memory:") or url.query:
        return None
    return SqliteLiveMessages(url.database)


class SeenSet:
    """A bounded, thread-safe set of recently seen keys (oldest forgotten first).

    Used to skip writes that are already known to be done (today's impression of a site
    message): a miss only costs a deduplicated insert, so forgetting is always safe."""

    def __init__(self, max_size: int = 200_000) -> None:
        self._max = max_size
        self._items: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def add(self, key: str) -> None:
        with self._lock:
            self._items[key] = None
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


@dataclass
class Counters:
    """Process-local counters the API increments (exported on /metrics)."""

    accepted: int = 0
    duplicates: int = 0
    reactions: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ingested(self, accepted: int, duplicates: int) -> None:
        with self.lock:
            self.accepted += accepted
            self.duplicates += duplicates

    def reacted(self, event: str, n: int = 1) -> None:
        with self.lock:
            self.reactions[event] = self.reactions.get(event, 0) + n


@dataclass
class ApiState:
    runtime: Runtime
    env: Mapping[str, str]
    reader: SqlEngine
    #: ``GET /v1/site/messages`` reads through this on a SQLite file (see site_reads.py).
    site_reader: SqliteLiveMessages | None
    write_keys: KeyRing
    site_keys: KeyRing
    admin_keys: KeyRing
    counters: Counters = field(default_factory=Counters)
    impressions: SeenSet = field(default_factory=SeenSet)
    receivers: dict[str, Any] = field(default_factory=dict)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Site impressions waiting to be written (flushed on an interval and on shutdown).
    pending_impressions: ImpressionBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.pending_impressions = ImpressionBuffer(
            lambda batch: write_impressions(self, batch),
            interval=self.runtime.settings.http.impression_flush_seconds,
        )

    @classmethod
    def build(cls, runtime: Runtime, env: Mapping[str, str]) -> ApiState:
        keys = runtime.settings.keys
        return cls(
            runtime=runtime,
            env=env,
            reader=read_engine(runtime.db),
            site_reader=site_reader(runtime.db),
            write_keys=KeyRing(keys.write_keys),
            site_keys=KeyRing(keys.site_keys),
            admin_keys=KeyRing(keys.admin_keys),
        )

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction on the runtime's database.

        On SQLite only one transaction writes at a time, and a writer that finds the lock
        taken sleeps in SQLite's busy handler (1, 2, 5 ... 100 ms steps): under 100
        concurrent requests that turns a sub-millisecond insert into seconds of latency.
        Queueing the API's own writers on a Python lock first hands the database over
        the moment it is free; the workers' transactions still wait in SQLite as before.
        """
        if self.runtime.db.dialect.name != "sqlite":
            with self.runtime.db.begin() as conn:
                yield conn
            return
        with self.write_lock, self.runtime.db.begin() as conn:
            yield conn

    @property
    def max_body(self) -> int:
        return self.runtime.settings.http.max_body_bytes


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.parcours
    return state

"""The read behind ``GET /v1/site/messages``: a customer's live messages, newest first.

The query is written twice, on purpose. :data:`LIVE_MESSAGES` is the SQLAlchemy statement
(PostgreSQL, and SQLite in memory); :class:`SqliteLiveMessages` runs the same SQL as a
fixed string on a plain ``sqlite3`` connection. On SQLite the query itself takes a few
microseconds, and SQLAlchemy's execution around it (pool checkout, compiled-cache lookup,
parameter and result processing, ``Row`` objects, a type processor per timestamp) took
~39 of the request's ~53 us: the one cost of this endpoint worth removing. The two forms
must keep the same semantics (customer or linked anonymous id, not dismissed, not expired
at ``now``, optional slot, ``created_at`` then ``id`` descending, at most 50); the API tests
run against both backends.

Timestamps are ``UTCDateTime`` columns: naive UTC text on SQLite, which sorts and compares
as time does, so ``now`` is bound in the same text form (orchestrator/db/reads.py).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, Select, String, bindparam, func, or_, select

from orchestrator.db import tables as t
from orchestrator.db.types import as_utc, parse_utc, sqlite_text

#: At most this many messages are answered.
LIMIT = 50


class LiveMessage(NamedTuple):
    """One row of the answer; SQLAlchemy's rows for this query have the same fields."""

    customer_id: str
    delivery_key: str
    channel: str
    slot: str
    html: str
    created_at: datetime
    expires_at: datetime | None


def _live_messages(anonymous: bool, with_slot: bool) -> Select[Any]:
    """The live-messages query, built once per shape (user or anonymous, with or without
    a slot) so a request only binds values: building a ``select`` costs more than
    running this one on SQLite."""
    m = t.site_messages.c
    if anonymous:
        a = t.anonymous_ids.c
        linked = select(a.customer_id).where(a.anonymous_id == bindparam("anonymous_id"))
        customer: Any = func.coalesce(linked.scalar_subquery(), bindparam("anon_profile"))
    else:
        customer = bindparam("customer_id", type_=String())
    q = (
        select(m.customer_id, m.delivery_key, m.channel, m.slot, m.html, m.created_at, m.expires_at)
        .where(m.customer_id == customer)
        .where(m.dismissed_at.is_(None))
        .where(or_(m.expires_at.is_(None), m.expires_at > bindparam("now")))
        .order_by(m.created_at.desc(), m.id.desc())
        .limit(LIMIT)
    )
    return q.where(m.slot == bindparam("slot")) if with_slot else q


LIVE_MESSAGES = {
    (anon, slot): _live_messages(anon, slot) for anon in (False, True) for slot in (False, True)
}


def read_with_sqlalchemy(
    engine: Engine, user_id: str | None, anonymous_id: str | None, slot: str | None, now: datetime
) -> list[LiveMessage]:
    params: dict[str, Any] = {"now": now}
    if user_id:
        params["customer_id"] = user_id
    else:
        params["anonymous_id"] = anonymous_id
        params["anon_profile"] = f"anon:{anonymous_id}"
    if slot:
        params["slot"] = slot
    with engine.connect() as conn:
        rows = conn.execute(LIVE_MESSAGES[(not user_id, bool(slot))], params).all()
    return [LiveMessage(*r) for r in rows]


def _sql(anonymous: bool, with_slot: bool) -> str:
    """:func:`_live_messages` as SQLite text with ``?`` markers: the customer (a user id,
    or an anonymous id and its ``anon:`` profile), ``now``, then the slot if any."""
    customer = (
        "coalesce((SELECT customer_id FROM anonymous_ids WHERE anonymous_id = ?), ?)"
        if anonymous
        else "?"
    )
    return (
        "SELECT customer_id, delivery_key, channel, slot, html, created_at, expires_at"
        f" FROM site_messages WHERE customer_id = {customer} AND dismissed_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > ?)"
        + (" AND slot = ?" if with_slot else "")
        + f" ORDER BY created_at DESC, id DESC LIMIT {LIMIT}"
    )


SQLITE_SQL = {(anon, slot): _sql(anon, slot) for anon in (False, True) for slot in (False, True)}

#: How long a read waits for a lock before the request answers 503. Short, unlike the
#: engine's 30 s: the read runs on the event loop's thread, so a wait stalls every request
#: of the process. A WAL reader takes no lock; it waits only while another connection
#: holds the database exclusively (WAL recovery after a crash, exclusive locking mode).
READ_BUSY_TIMEOUT_MS = 200


class SqliteLiveMessages:
    """The live-messages read on a SQLite file through ``sqlite3``.

    One connection per thread that reads (in the daemon: the event loop's thread only),
    opened on first use and kept: opening one costs more than a hundred reads. It is an
    ordinary connection made read-only with ``query_only`` (a ``mode=ro`` connection can
    fail to open a WAL database whose ``-shm`` file it may not create), in autocommit, so
    every SELECT is its own read transaction and sees everything committed before it;
    ``fetchall`` ends the statement, so no snapshot is held between requests. SQLite
    re-prepares a statement after a schema change by itself. A connection that raised an
    ``OperationalError`` is dropped, so the next request starts on a fresh one.
    """

    def __init__(self, path: str) -> None:
        # mode=rw: a missing file is an error (answered 503), not a new empty database.
        self._uri = Path(path).resolve().as_uri() + "?mode=rw"
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,  # so that close() may run on another thread
            timeout=READ_BUSY_TIMEOUT_MS / 1000,  # sets SQLite's busy_timeout
        )
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA cache_size=-65536")  # as orchestrator/db/connect.py
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._opened.append(conn)
        self._local.conn = conn
        return conn

    def read(
        self, user_id: str | None, anonymous_id: str | None, slot: str | None, now: datetime
    ) -> list[LiveMessage]:
        """The live messages, as :func:`read_with_sqlalchemy` gives them. Raises
        ``sqlite3.OperationalError`` when the database is locked or unreadable."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
        params: tuple[str, ...]
        if user_id:
            params = (user_id, sqlite_text(now))
        else:
            params = (str(anonymous_id), f"anon:{anonymous_id}", sqlite_text(now))
        if slot:
            params += (slot,)
        try:
            rows = conn.execute(SQLITE_SQL[(not user_id, bool(slot))], params).fetchall()
        except sqlite3.DatabaseError:  # locked, unreadable, replaced: start afresh next time
            self._drop(conn)
            raise
        return [
            LiveMessage(c, k, ch, s, h, parse_utc(made), as_utc(ends))
            for c, k, ch, s, h, made, ends in rows
        ]

    def _drop(self, conn: sqlite3.Connection) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._opened:
                self._opened.remove(conn)
        conn.close()

    def close(self) -> None:
        """Close every thread's connection (the API shuts down); a later read reopens."""
        with self._lock:
            opened, self._opened = self._opened, []
        self._local = threading.local()
        for conn in opened:
            conn.close()

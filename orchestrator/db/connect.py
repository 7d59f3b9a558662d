"""Opening the database: a SQLite file in WAL mode by default, PostgreSQL by URL.

SQLite pragmas are set on every connection: WAL lets the API read while a worker writes;
``busy_timeout`` makes a second writer wait instead of failing; ``synchronous=NORMAL`` is
durable in WAL mode against process crashes (the documented trade-off covers only power
loss). Writes take the lock at BEGIN (``BEGIN IMMEDIATE``) so two writers never deadlock
upgrading a read lock.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and use the psycopg 3 driver for it."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg2", ""):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def open_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    # orjson: JSON columns are on the engine's hot path (visits, context, payloads).
    kwargs.setdefault("json_serializer", lambda v: orjson.dumps(v).decode())
    kwargs.setdefault("json_deserializer", orjson.loads)
    # Database errors end up in logs; their bound parameters are customers' data.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-65536")
            # Checkpoint less often: each one copies WAL pages back and syncs the file.
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    return create_engine(url, **kwargs)

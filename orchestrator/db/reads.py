"""Driver-level reads of enrollments for the engine's hot path on SQLite.

Claiming a batch of due timers through SQLAlchemy's result machinery ran every column of
every row through a type processor (four timestamps and two JSON documents per row): more
time than the SQL itself. Here the rows come straight from ``sqlite3`` and are decoded by
hand into the same values the column types produce. Timestamps repeat heavily within a
batch (one instant for every step entered together), so each distinct text is parsed once.
PostgreSQL keeps the SQLAlchemy path: psycopg already returns native values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from orchestrator.db.types import parse_utc
from orchestrator.model import Enrollment

#: The ``enrollments`` columns in table order, as ``Enrollment.from_row`` expects them.
ENROLLMENT_COLUMNS = (
    "id, journey, version, customer_id, key, state, status, wake_at, wake_trigger, visits,"
    " context, last_delivery, arm, entered_at, step_entered_at, ended_at, exit_reason"
)


def _parse(seen: dict[str, datetime], text: str) -> datetime:
    found = seen[text] = parse_utc(text)
    return found


def enrollments_where(
    conn: Connection, where: str, params: Sequence[Any], *, tail: str = ""
) -> list[Enrollment]:
    """``SELECT`` whole enrollments with a raw SQLite ``WHERE`` clause (``?`` markers)."""
    rows = conn.exec_driver_sql(
        f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE {where} {tail}", tuple(params)
    ).fetchall()
    seen: dict[str, datetime] = {}
    get = seen.get
    loads = orjson.loads
    out: list[Enrollment] = []
    for r in rows:
        wake, entered, stepped, ended = r[7], r[13], r[14], r[15]
        out.append(
            Enrollment(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                get(entered) or _parse(seen, entered),
                get(stepped) or _parse(seen, stepped),
                None if wake is None else get(wake) or _parse(seen, wake),
                r[8],
                loads(r[9] or "{}") or {},
                loads(r[10] or "{}") or {},
                r[11],
                r[12],
                None if ended is None else get(ended) or _parse(seen, ended),
                r[16],
            )
        )
    return out

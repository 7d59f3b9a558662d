"""Small SQL helpers that differ by dialect: upserts and claims with SKIP LOCKED."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, Table, text
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: Connection,
    table: Table,
    row: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update (or DO NOTHING)."""
    rows = [row] if isinstance(row, Mapping) else list(row)
    if not rows:
        return
    dialect = conn.dialect.name
    ins: Any
    if dialect == "postgresql":
        ins = postgresql.insert(table)
    elif dialect == "sqlite":
        ins = sqlite.insert(table)
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(dialect)
    if update:
        stmt = ins.on_conflict_do_update(
            index_elements=list(keys), set_={c: ins.excluded[c] for c in update}
        )
    else:
        stmt = ins.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, rows)


def claim(conn: Connection, query: Select[Any]) -> Select[Any]:
    """Lock claimed rows so replicas share work: FOR UPDATE SKIP LOCKED on PostgreSQL.
    SQLite has one writer at a time (BEGIN IMMEDIATE), so the query is unchanged."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def lock_rows(conn: Connection, query: Select[Any]) -> Select[Any]:
    """Lock rows, waiting for other holders (PostgreSQL); SQLite is already serialised."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update()
    return query


def claim_rows(conn: Connection, query: Select[Any]) -> list[Row[Any]]:
    """Run a claim (``claim``'s locking included) and return its rows.

    On PostgreSQL the claim is planned without bitmap scans. A claim is "the first N due
    rows by time", which the partial index answers in order, stopping after N. With
    statistics older than a burst (autovacuum had no time to analyze, or is off), the
    planner expects a handful of due rows and picks a bitmap scan plus a sort instead:
    every claim then reads and sorts *all* due rows (half a second per batch at a million
    timers, measured). Switched off for this one statement, back to the default after.
    """
    if conn.dialect.name != "postgresql":
        return list(conn.execute(query).all())
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    rows = list(conn.execute(claim(conn, query)).all())
    # Only after success: a failed claim aborts the transaction, which takes the setting
    # with it, and a reset there would hide the real error behind "transaction aborted".
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan TO DEFAULT")
    return rows


#: Advisory lock namespaces: one customer's events, batches and erasure (``CUSTOMER``);
#: the frequency-cap count of one customer's sends (``CAP``).
CUSTOMER = "parcours:"
CAP = "parcours:cap:"


def lock_customers(
    conn: Connection, ids: Iterable[str], *, wait: bool, namespace: str = CUSTOMER
) -> list[str]:
    """Transaction-scoped advisory locks per customer on PostgreSQL; returns the ids held.

    ``wait`` blocks until each is free, taking them in sorted order (the array's order,
    so two transactions never deadlock on each other); otherwise a lock another
    transaction holds is skipped. SQLite has one writer at a time: every id is held."""
    wanted = sorted(set(ids))
    if conn.dialect.name != "postgresql" or not wanted:
        return wanted
    lock = "hashtextextended(CAST(:ns AS text) || cid, 0)"
    if wait:
        conn.execute(
            text(f"SELECT pg_advisory_xact_lock({lock}) FROM unnest(CAST(:ids AS text[])) cid"),
            {"ids": wanted, "ns": namespace},
        )
        return wanted
    return list(
        conn.execute(
            text(
                "SELECT cid FROM unnest(CAST(:ids AS text[])) cid "
                f"WHERE pg_try_advisory_xact_lock({lock})"
            ),
            {"ids": wanted, "ns": namespace},
        ).scalars()
    )

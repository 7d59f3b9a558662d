"""Small SQL helpers that differ by dialect: upserts and claims with SKIP LOCKED."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select, Table
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

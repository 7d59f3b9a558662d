"""Driver-level bulk writes for the engine's hot path.

SQLAlchemy's executemany processes every parameter of every row through its type system;
for the tens of thousands of history, outbox and enrollment rows a second the engine writes,
that bookkeeping cost more than the database itself. Here rows are plain tuples, converted
once per value by a dialect-specific adapter, and handed to the DBAPI's ``executemany``
(psycopg 3 pipelines it). The storage format is exactly what the SQLAlchemy column types
write, so both paths read and compare the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg.types.json import Json
from sqlalchemy import Connection

from orchestrator.db.types import sqlite_text


class Bulk:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self._texts: dict[datetime, str] = {}

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as the column type stores it (SQLite: naive UTC text). Most values
        of a batch are a handful of instants (now, now plus a step's timeout), so each
        distinct one is converted once."""
        if value is None or not self.sqlite:
            return value
        text = self._texts.get(value)
        if text is None:
            text = sqlite_text(value)
            self._texts[value] = text
        return text

    def js(self, value: Any) -> Any:
        if self.sqlite:
            return orjson.dumps(value).decode()
        return Json(value, dumps=orjson.dumps)

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        data = list(rows)
        if not data:
            return
        marks = ", ".join([self.mark] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self.conn.exec_driver_sql(sql, data)

    def update(
        self, table: str, columns: Sequence[str], key: str, rows: Iterable[Sequence[Any]]
    ) -> None:
        """``rows`` hold the new values in ``columns`` order, then the key."""
        data = list(rows)
        if not data:
            return
        sets = ", ".join(f"{c} = {self.mark}" for c in columns)
        self.conn.exec_driver_sql(f"UPDATE {table} SET {sets} WHERE {key} = {self.mark}", data)

"""The raw-SQL ceiling of the engine benchmark writes exactly the rows the engine writes.

The benchmark's headline figure is the engine's share of that ceiling, so the comparison is
only honest while both write the same rows: if the engine starts writing more (or the
journey changes), this test says the ceiling must follow.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.engine_throughput import run_engine, run_raw_sql

# Tables the benchmark writes, with the columns to leave out of the comparison
# (autoincrement ids, assigned in a different order by phase-major writes).
TABLES = {
    "events": ("id",),
    "customers": (),
    "enrollments": (),
    "history": ("id",),
    "deliveries": ("id",),
    "audience_memberships": (),
}


def _rows(path: Path, table: str, skip: tuple[str, ...]) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        cur = con.execute(f"SELECT * FROM {table}")
        keep = [i for i, d in enumerate(cur.description) if d[0] not in skip]
        return sorted((tuple(r[i] for i in keep) for r in cur), key=repr)
    finally:
        con.close()


def test_the_ceiling_writes_the_same_rows_as_the_engine(tmp_path: Path) -> None:
    customers, batch = 120, 50
    engine = run_engine(customers, f"sqlite:///{tmp_path / 'engine.db'}", batch)
    raw = run_raw_sql(customers, str(tmp_path / "raw.db"), batch)
    assert engine["transitions"] == raw["transitions"] == 7 * customers
    assert engine["ended"] == customers
    for table, skip in TABLES.items():
        mine = _rows(tmp_path / "engine.db", table, skip)
        assert mine, table
        assert _rows(tmp_path / "raw.db", table, skip) == mine, table

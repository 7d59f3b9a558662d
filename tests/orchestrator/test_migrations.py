"""The migrations build exactly the schema the code declares (tables, columns, indexes), on
both backends: a table added to ``tables.py`` without a migration
(or the reverse) fails here, not on a user's upgrade."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade


def test_the_migrated_schema_is_the_declared_one(database_url: str) -> None:
    db = open_engine(database_url)
    upgrade(db)
    with db.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, t.metadata)
        tables = set(inspect(conn).get_table_names())
    db.dispose()
    assert diff == []
    assert {"segment_memberships", "segment_baselines", "enrollments"} <= tables

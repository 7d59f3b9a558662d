"""Alembic environment: uses the engine handed over by ``orchestrator.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from orchestrator.db.connect import open_engine
from orchestrator.db.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):
    engine = open_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///parcours.db")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()

"""Schema migrations with Alembic, driven from code (``parcours db upgrade``).

The daemon refuses to start on a schema that is not at the newest revision, and says which
command fixes it, because running new code on an old schema corrupts quietly.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class SchemaOutdated(RuntimeError):
    """The database schema is older (or newer) than this code expects."""


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def check_current(engine: Engine) -> None:
    """Raise SchemaOutdated with the fix when the schema is not at head."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        shown = current or "empty (never migrated)"
        raise SchemaOutdated(
            f"the database schema is at {shown}, this parcours needs {head}: "
            "run `parcours db upgrade` (with the same --config/PARCOURS_DATABASE_URL) first"
        )

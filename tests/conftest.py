"""Shared fixtures: databases (SQLite file, throwaway PostgreSQL) and a runtime on a
virtual clock with recording channels."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "journeys" / "examples"
CONFIG = ROOT / "config" / "parcours.toml"
PG_ADMIN_URL = os.environ.get(
    "PARCOURS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means: not usable here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"
    return None


_PG_PROBLEM: str | bool | None = False


def postgres_problem() -> str | None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_problem()
    return _PG_PROBLEM  # type: ignore[return-value]


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"parcours_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test using this runs on a SQLite file and on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parcours.db'}"
        return
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'parcours.db'}"


def settings_for(url: str, **overrides: Any) -> Any:
    from orchestrator.config import load_settings

    values: dict[str, Any] = {"journeys": [str(EXAMPLES)], "templates": str(EXAMPLES / "templates")}
    values.update(overrides)
    return load_settings(CONFIG, database_url=url, **values)


def write_config(
    directory: Path, database_url: str | None = None, *, port: int | None = None
) -> Path:
    """``config/parcours.toml`` as a user would edit it for a test: the example journeys
    and templates by absolute path, and optionally another database and HTTP port. For
    tests that run the CLI or the daemon as a separate process."""
    text = (
        CONFIG.read_text()
        .replace('"journeys/examples"', f'"{EXAMPLES}"')
        .replace('templates = "journeys/examples/templates"', f'templates = "{EXAMPLES}/templates"')
    )
    if database_url is not None:
        text = text.replace(
            'database_url = "sqlite:///parcours.db"', f'database_url = "{database_url}"'
        )
    if port is not None:
        text = text.replace("port = 8080", f"port = {port}")
    path = directory / "parcours.toml"
    path.write_text(text)
    return path

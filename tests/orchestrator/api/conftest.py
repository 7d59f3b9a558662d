"""Shared fixtures for the HTTP API tests: a migrated database per test, a Runtime on a
virtual clock with log channels (owned email and site, a paid audience) carrying webhook
settings for SendGrid (a fresh ECDSA P-256 key), Postmark and Mailgun, and the ASGI app.
Helpers and constants are in ``support.py``.

The database is a SQLite file; a module that sets ``ON_POSTGRES_TOO = True`` runs each of
its tests that uses one on PostgreSQL as well (a fresh database copied from a migrated
template; skipped with the reason when the server is unreachable)."""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.clock import VirtualClock
from orchestrator.config import Settings
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.runtime import Runtime
from tests.conftest import PG_ADMIN_URL, drop_pg_database, postgres_problem
from tests.orchestrator.api.support import ENV, START, make_runtime, make_settings


@dataclass(frozen=True)
class SendGridKeys:
    private: ec.EllipticCurvePrivateKey
    public_b64: str


@pytest.fixture(scope="session")
def sendgrid_keys() -> SendGridKeys:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SendGridKeys(private, base64.b64encode(der).decode())


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file, copied for each test (migrating costs ~0.3 s)."""
    path = tmp_path_factory.mktemp("template") / "parcours.db"
    engine = open_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and getattr(metafunc.module, "ON_POSTGRES_TOO", False):
        metafunc.parametrize(
            "backend",
            ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
            indirect=True,
        )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is copied from."""
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    name = f"parcours_api_template_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = open_engine(url)
    upgrade(engine)
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
    yield name
    drop_pg_database(url)


def _pg_copy(template: str) -> str:
    name = f"parcours_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def api_database(
    backend: str, tmp_path: Path, migrated_db: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The URL of a migrated, empty database of the test's backend."""
    if backend == "sqlite":
        path = tmp_path / "parcours.db"
        shutil.copyfile(migrated_db, path)
        yield f"sqlite:///{path}"
        return
    url = _pg_copy(request.getfixturevalue("pg_template"))
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def settings(api_database: str, sendgrid_keys: SendGridKeys) -> Settings:
    return make_settings(api_database, sendgrid_keys.public_b64)


@pytest.fixture
def runtime(settings: Settings, clock: VirtualClock) -> Iterator[Runtime]:
    rt = make_runtime(settings, clock)
    yield rt
    rt.db.dispose()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime, env=ENV)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server on loopback, for real client libraries."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)

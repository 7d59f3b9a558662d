"""Shared fixtures for the HTTP API tests: a migrated SQLite file per test, a Runtime on a
virtual clock with log channels (owned email and site, a paid audience) carrying webhook
settings for SendGrid (a fresh ECDSA P-256 key), Postmark and Mailgun, and the ASGI app.
Helpers and constants are in ``support.py``."""

from __future__ import annotations

import base64
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.clock import VirtualClock
from orchestrator.config import Settings
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.runtime import Runtime
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


@pytest.fixture
def db_path(tmp_path: Path, migrated_db: Path) -> Path:
    path = tmp_path / "parcours.db"
    shutil.copyfile(migrated_db, path)
    return path


@pytest.fixture
def settings(db_path: Path, sendgrid_keys: SendGridKeys) -> Settings:
    return make_settings(db_path, sendgrid_keys.public_b64)


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

"""The daemon while its PostgreSQL server restarts: it stays up, says so in its log once,
and when the server is back it picks up where it was — every event accepted over HTTP is
processed once, every customer enrolled once, every email sent once.

The shared server on 127.0.0.1:5432 is not ours to restart, so the test starts a private
cluster (``initdb``/``pg_ctl``, as the ``postgres`` user when the tests run as root) on a
free loopback port, and skips with the reason when that cannot be done.

A result the dispatcher could not write because the database dropped is kept and written
when it answers again: the email is not sent a second time after the lease.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from tests.conftest import ROOT, write_config
from tests.orchestrator.conftest import Harness

WRITE_KEY = "dev-write-key"  # the development key in config/parcours.toml
PAUSED = "database unavailable: workers pause and retry"
RESUMED = "database available again: workers resume"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own on 127.0.0.1:``port``, ours to stop and start."""

    pg_ctl: str
    data: Path
    port: int
    as_user: list[str]  # ``runuser -u postgres --`` when running as root, else nothing

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        cmd = [*self.as_user, self.pg_ctl, "-D", str(self.data), "-w", "-t", "30", *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1"
        self._ctl("start", "-o", options, "-l", str(self.data.parent / "server.log"))

    def stop(self) -> None:
        """A fast shutdown: every session is terminated, open transactions roll back."""
        self._ctl("stop", "-m", "fast")

    def create_database(self) -> str:
        name = f"parcours_{os.urandom(4).hex()}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("initdb/pg_ctl not found: cannot start a private PostgreSQL cluster")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="parcours-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no 'postgres' user to run a cluster as")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = PrivatePostgres(pg_ctl, base / "data", _free_port(), as_user)
    try:
        subprocess.run(
            [
                *as_user,
                initdb,
                "-D",
                str(cluster.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc} {detail.decode()[-300:]}")
    try:
        yield cluster
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(cluster.data), "stop", "-m", "immediate"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def _wait_for(what: str, done: Callable[[], bool], seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def _log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


class Shop:
    """A website sending a steady stream of events over HTTP, retrying on 503 and on refused
    connections as Segment's clients do; each customer identifies and abandons a cart."""

    def __init__(self, base: str, customers: int, per_batch: int = 4) -> None:
        self.base = base
        self.customers = customers
        self.per_batch = per_batch
        self.statuses: Counter[int] = Counter()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert self.done.is_set(), "the shop did not get all its events accepted"
        if self.error is not None:
            raise self.error

    def failures(self) -> int:
        return self.statuses[503] + self.statuses[0]

    def _batch(self, first: int) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        for i in range(first, min(first + self.per_batch, self.customers)):
            calls.append(
                {
                    "type": "identify",
                    "userId": f"u{i}",
                    "messageId": f"id-{i}",
                    "traits": {"email": f"u{i}@example.com", "first_name": "Anna"},
                }
            )
            calls.append(
                {
                    "type": "track",
                    "userId": f"u{i}",
                    "event": "cart_abandoned",
                    "messageId": f"cart-{i}",
                    "properties": {"cart_id": f"c{i}", "total": 10 + i},
                }
            )
        return calls

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, auth=(WRITE_KEY, ""), timeout=10) as http:
                for first in range(0, self.customers, self.per_batch):
                    body = {"batch": self._batch(first)}
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            status = http.post("/v1/batch", json=body).status_code
                        except httpx.TransportError:
                            status = 0
                        self.statuses[status] += 1
                        if status == 200:
                            break
                        assert status in (0, 503), f"unexpected HTTP {status}"
                        assert time.monotonic() < deadline, "ingest did not come back"
                        time.sleep(0.1)
                    time.sleep(0.03)
            self.done.set()
        except BaseException as exc:  # surfaced by join()
            self.error = exc


def _counts(url: str) -> dict[str, Any]:
    db = open_engine(url)
    try:
        with db.connect() as conn:
            e, d = t.events.c, t.deliveries.c
            return {
                "events": conn.execute(select(func.count()).select_from(t.events)).scalar_one(),
                "unprocessed": conn.execute(
                    select(func.count()).where(e.processed_at.is_(None))
                ).scalar_one(),
                "enrollments": conn.execute(
                    select(func.count()).select_from(t.enrollments)
                ).scalar_one(),
                "deliveries": dict(
                    conn.execute(select(d.status, func.count()).group_by(d.status)).all()
                ),
            }
    finally:
        db.dispose()


@pytest.mark.postgres
def test_the_daemon_rides_out_a_postgres_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_postgres.create_database()
    db = open_engine(url)
    upgrade(db)
    port = _free_port()
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "PARCOURS_LOG_FORMAT": "json",
        "PARCOURS_WORKERS__POLL_INTERVAL": "0.2",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "-c",
            str(write_config(tmp_path, url, port=port)),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),  # a file: a pipe nobody reads would block the daemon
    )
    base = f"http://127.0.0.1:{port}"
    customers = 120
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for("the daemon to answer /readyz", ready, 30, log)
        shop = Shop(base, customers)
        shop.start()
        _wait_for("some events to be sent", lambda: _counts(url)["deliveries"] != {}, 15, log)

        private_postgres.stop()  # mid-flow: the shop keeps sending, the daemon working

        def outage_logged() -> bool:
            return any(line["event"] == PAUSED for line in _log_lines(log))

        _wait_for("the daemon to log the outage", outage_logged, 10, log)
        probe = {"type": "track", "userId": "probe", "event": "page_viewed", "messageId": "p"}
        r = httpx.post(f"{base}/v1/batch", json={"batch": [probe]}, auth=(WRITE_KEY, ""))
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert proc.poll() is None, "the daemon exited when its database went away"
        failures = shop.failures()
        _wait_for(
            "the shop to be turned away a few times",
            lambda: shop.failures() >= failures + 4,
            10,
            log,
        )

        private_postgres.start()
        shop.join(timeout=60)

        expected = {
            "events": 2 * customers,
            "unprocessed": 0,
            "enrollments": customers,
            "deliveries": {"sent": customers},
        }
        _wait_for("every event to be handled", lambda: _counts(url) == expected, 30, log)
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        db.dispose()
    assert proc.returncode == 0, log.read_text()[-4000:]

    with db.connect() as conn:
        e = t.enrollments.c
        rows = conn.execute(select(e.customer_id, e.journey, e.state)).all()
        customers_rows = conn.execute(select(t.customers.c.email)).scalars().all()
    db.dispose()
    assert sorted(r.customer_id for r in rows) == sorted(f"u{i}" for i in range(customers))
    assert {(r.journey, r.state) for r in rows} == {("cart-recovery", "wait_email")}
    assert sorted(customers_rows) == sorted(f"u{i}@example.com" for i in range(customers))

    lines = _log_lines(log)
    sends = Counter(line["customer"] for line in lines if line["event"] == "would send")
    assert sends == dict.fromkeys((f"u{i}" for i in range(customers)), 1), "sent twice or not"
    # One line when the outage starts and one when it ends, not a traceback per job per tick.
    events = [line["event"] for line in lines]
    assert events.count(PAUSED) == 1, events
    assert events.count(RESUMED) == 1, events
    assert "listener reconnected" in events
    assert "Traceback" not in log.read_text()


def test_results_are_recorded_once_the_database_answers_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The email has gone out when the database drops: the dispatcher keeps the result and
    writes it when the database is back (within the lease), rather than sending again."""
    h = harness
    h.identify("ann", email="ann@example.nl")
    h.event("ann", "cart_abandoned", cart_id="c", total=5)
    record = h.dispatcher.record
    failures = [OperationalError("UPDATE deliveries", {}, Exception("server closed"))] * 2

    def flaky(outcomes: Any) -> None:
        if failures:
            raise failures.pop()
        record(outcomes)

    monkeypatch.setattr(h.dispatcher, "record", flaky)
    assert h.dispatch() == 1
    assert failures == []
    [row] = h.deliveries("ann")
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(h.channel("email").sent) == 1
    assert h.dispatch() == 0

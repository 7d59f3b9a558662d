"""The daemon on PostgreSQL: woken by NOTIFY, and unshaken when its connections are cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from orchestrator.clock import SystemClock
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.ingest import EventIn, record
from tests.conftest import ROOT, write_config

pytestmark = pytest.mark.postgres


@pytest.fixture
def daemon(
    postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    upgrade(open_engine(postgres_url))
    poll = getattr(request, "param", "0.2")
    env = {
        **os.environ,
        "PARCOURS_WORKERS__POLL_INTERVAL": poll,
        "PARCOURS_LOG_FORMAT": "json",
        "PARCOURS_WORKERS__LEASE_SECONDS": "2",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "--role",
            "worker",
            "-c",
            str(write_config(tmp_path, postgres_url)),
        ],
        # A file, not a pipe: a pipe nobody reads fills up and blocks the daemon's logging.
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("w"),
        text=True,
    )
    db = open_engine(postgres_url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # ready once it has recorded the journey versions
        with db.connect() as conn:
            if conn.execute(select(func.count()).select_from(t.journeys)).scalar_one() == 3:
                break
        time.sleep(0.1)
    time.sleep(0.5)
    yield postgres_url, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    db.dispose()


def _log(url: str) -> str:
    return "see daemon.log in the test's tmp_path"


def _send(url: str, start: int, n: int) -> None:
    db = open_engine(url)
    events = [
        EventIn.model_validate(
            {
                "userId": f"u{i}",
                "event": "cart_abandoned",
                "messageId": f"m{i}",
                "properties": {"cart_id": "c", "total": 9},
            }
        )
        for i in range(start, start + n)
    ]
    with db.begin() as conn:
        record(conn, events, SystemClock().now())
    db.dispose()


def _counts(url: str) -> tuple[int, int, int]:
    db = open_engine(url)
    with db.connect() as conn:
        pending = conn.execute(
            select(func.count()).where(t.events.c.processed_at.is_(None))
        ).scalar_one()
        enrolled = conn.execute(select(func.count()).select_from(t.enrollments)).scalar_one()
        sent = conn.execute(
            select(func.count()).where(t.deliveries.c.status == "sent")
        ).scalar_one()
    db.dispose()
    return pending, enrolled, sent


@pytest.mark.parametrize("daemon", ["5"], indirect=True)
def test_notify_wakes_the_daemon_long_before_the_next_poll(
    daemon: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = daemon
    started = time.monotonic()
    _send(url, 0, 1)
    while _counts(url)[2] < 1 and time.monotonic() - started < 10:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert _counts(url) == (0, 1, 1)
    assert elapsed < 2.5, f"took {elapsed:.2f}s with a 5 s poll interval"


def test_cut_connections_lose_nothing(daemon: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = daemon
    admin = open_engine(url)
    total = 0
    for round_ in range(6):
        _send(url, total, 25)
        total += 25
        time.sleep(0.15)
        with admin.connect() as conn:  # cut every connection the daemon holds
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.commit()
        assert proc.poll() is None, f"daemon died in round {round_}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _counts(url) != (0, total, total):
        time.sleep(0.2)
    if _counts(url) != (0, total, total):
        db = open_engine(url)
        with db.connect() as conn:
            rows = conn.execute(
                select(
                    t.deliveries.c.status,
                    t.deliveries.c.attempts,
                    t.deliveries.c.last_error,
                    func.count(),
                ).group_by(
                    t.deliveries.c.status, t.deliveries.c.attempts, t.deliveries.c.last_error
                )
            ).all()
        raise AssertionError(f"{rows}\n{_log(url)}")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 0, _log(url)
    admin.dispose()


def test_the_daemon_warns_when_autovacuum_is_off(
    daemon: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, _ = daemon
    db = open_engine(url)
    with db.connect() as conn:
        setting = conn.execute(text("SHOW autovacuum")).scalar()
    db.dispose()
    log = (tmp_path / "daemon.log").read_text()
    assert ("autovacuum is off" in log) == (setting != "on"), log[-2000:]


def test_a_claim_takes_the_first_due_rows_and_leaves_the_planner_as_it_was(
    postgres_url: str,
) -> None:
    from orchestrator.db.sql import claim_rows

    db = open_engine(postgres_url)
    upgrade(db)
    _send(postgres_url, 0, 5)
    with db.begin() as conn:
        conn.execute(text("ANALYZE events"))
        rows = claim_rows(
            conn,
            select(t.events)
            .where(t.events.c.processed_at.is_(None))
            .order_by(t.events.c.id)
            .limit(3),
        )
        assert [r.message_id for r in rows] == ["m0", "m1", "m2"]
        assert conn.execute(text("SHOW enable_bitmapscan")).scalar() == "on"
        # The rows stay locked for this transaction: another claim skips them.
        with db.begin() as other:
            more = claim_rows(
                other,
                select(t.events).where(t.events.c.processed_at.is_(None)).order_by(t.events.c.id),
            )
            assert [r.message_id for r in more] == ["m3", "m4"]
    db.dispose()

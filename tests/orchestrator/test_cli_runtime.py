"""The runtime commands as an operator and a designer use them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.conftest import ROOT, write_config


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url, port=0)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_customer_moves_through_a_journey_by_hand(config: Path) -> None:
    c = str(config)
    code, out = run("status", "-c", c)
    assert code == 2 and "parcours db upgrade" in out  # refuses an unmigrated database
    assert run("db", "upgrade", "-c", c)[0] == 0
    assert "up to date" in run("db", "upgrade", "-c", c)[1]
    assert (
        run(
            "send-event",
            "ann",
            "identify",
            "-t",
            "email=ann@example.nl",
            "-t",
            "first_name=Ann",
            "-c",
            c,
        )[0]
        == 0
    )
    code, out = run(
        "send-event", "ann", "cart_abandoned", "-p", "cart_id=c1", "-p", "total=30", "-c", c
    )
    assert code == 0 and "recorded" in out
    code, out = run("status", "-c", c)
    assert "cart-recovery" in out and "wait_email" in out
    assert "pending 1" in out  # the reminder email waits in the outbox
    code, out = run("customer", "ann", "--json", "-c", c)
    timeline = json.loads(out)["timeline"]
    whats = [e["what"] for e in timeline]
    assert any("reminder_email -> wait_email" in w for w in whats)
    assert any("send via email cart_reminder" in w for w in whats)


def test_enroll_by_hand_and_refusals(config: Path) -> None:
    c = str(config)
    run("db", "upgrade", "-c", c)
    code, out = run("enroll", "welcome-series", "bob", "-c", c)
    assert code == 0 and "enrolled bob" in out
    code, out = run("enroll", "welcome-series", "bob", "-c", c)
    assert code == 1 and "re-entry" in out
    code, out = run("enroll", "no-such-journey", "bob", "-c", c)
    assert code == 2 and "cart-recovery" in out  # names the journeys that exist


def test_deliveries_lists_dead_ones_with_reason(config: Path) -> None:
    c = str(config)
    run("db", "upgrade", "-c", c)
    code, _out = run("deliveries", "--dead", "-c", c)
    assert code == 0


def test_simulate_prints_the_funnel(config: Path) -> None:
    code, out = run(
        "simulate",
        "cart-recovery",
        "-n",
        "300",
        "-r",
        "email=0.4",
        "-r",
        "site=0.2",
        "--json",
        "-c",
        str(config),
    )
    assert code == 0, out
    report = json.loads(out)
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["reminder_email"]["entered"] == 300
    assert steps["wait_email"]["reacted"] + steps["wait_email"]["timed_out"] == 300
    # Owned channels first: only those who reacted to neither reach the paid step.
    assert report["reached_paid"] == steps["wait_site"]["timed_out"]
    assert 0 < report["reached_paid"] < 300
    assert sum(report["exits"].values()) == 300


def test_simulate_rejects_bad_probabilities(config: Path) -> None:
    code, out = run("simulate", "cart-recovery", "-r", "email=2", "-c", str(config))
    assert code == 2 and "between 0 and 1" in out
    code, out = run("simulate", "cart-recovery", "-r", "sms=0.2", "-c", str(config))
    assert code == 2 and "unknown channel" in out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_daemon_runs_applies_events_and_drains_on_sigterm(config: Path) -> None:
    c = str(config)
    run("db", "upgrade", "-c", c)
    env = {**os.environ, "PARCOURS_WORKERS__POLL_INTERVAL": "0.1", "PARCOURS_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--role", "worker", "-c", c],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(config.parent / "daemon.log").open("w"),  # a pipe nobody reads would block
        text=True,
    )
    try:
        run(
            "send-event",
            "ann",
            "cart_abandoned",
            "-p",
            "cart_id=c1",
            "-p",
            "total=3",
            "--no-apply",
            "-c",
            c,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "outbox: sent 1\n" in run("status", "-c", c)[1]:  # sent, nothing pending
                break
            time.sleep(0.2)
        status = run("status", "-c", c)[1]
        assert "outbox: sent 1\n" in status and "inbox: 0 unprocessed" in status
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    err = (config.parent / "daemon.log").read_text()
    assert proc.returncode == 0, err
    assert '"stopped"' in err


def test_daemon_refuses_an_old_schema(config: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "parcours db upgrade" in proc.stderr

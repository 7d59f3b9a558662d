"""What the daemon writes to stderr: one JSON object per line, whoever logs it, with
personal data masked."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from orchestrator.logs import configure


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_library_warnings_and_tracebacks_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json")
    structlog.get_logger("parcours.engine").info("events processed", count=3)
    logging.getLogger("uvicorn.error").warning("listening for ann@example.nl")
    try:
        raise RuntimeError("provider down")
    except RuntimeError:
        logging.getLogger("apscheduler.executors.default").exception("job raised")
    got = lines(capsys.readouterr().err)  # every line parses: no plain text in between
    assert [g["event"] for g in got] == [
        "events processed",
        "listening for a***@example.nl",
        "job raised",
    ]
    assert got[1]["level"] == "warning" and got[1]["logger"] == "uvicorn.error"
    assert "RuntimeError: provider down" in str(got[2]["exception"])


def test_a_job_still_running_at_its_next_tick_is_not_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json")
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "Workers.inbox" skipped: maximum number of running instances reached (1)'
    )
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by 0:05")
    assert [g["event"] for g in lines(capsys.readouterr().err)] == [
        "Run time of job was missed by 0:05"
    ]


def test_tracebacks_and_library_warnings_are_masked_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import warnings

    configure("json")
    try:
        raise ValueError("550 <ann@example.nl> rejected")
    except ValueError:
        structlog.get_logger("parcours.dispatch").exception("send failed")
        logging.getLogger("aiosmtplib").exception("smtp error")
    with warnings.catch_warnings():  # as outside pytest: shown, through logging
        warnings.simplefilter("always")
        warnings.showwarning = logging._showwarning  # type: ignore[attr-defined]
        warnings.warn("deprecated thing for bob@example.org", UserWarning, stacklevel=1)
    got = lines(capsys.readouterr().err)
    assert [g["event"] for g in got[:2]] == ["send failed", "smtp error"]
    for g in got[:2]:
        assert "a***@example.nl" in str(g["exception"])
        assert "ann@" not in str(g["exception"])
    assert "b***@example.org" in str(got[2]["event"]) and got[2]["logger"] == "py.warnings"


def test_database_errors_do_not_carry_customer_data(tmp_path: object) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from orchestrator.db.connect import open_engine

    db = open_engine(f"sqlite:///{tmp_path}/x.db")
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE c (email TEXT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO c VALUES (:e)"), {"e": "ann@example.nl"})
    with pytest.raises(IntegrityError) as err, db.begin() as conn:
        conn.execute(text("INSERT INTO c VALUES (:e)"), {"e": "ann@example.nl"})
    assert "ann@example.nl" not in str(err.value)
    db.dispose()

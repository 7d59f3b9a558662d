"""structlog configuration: JSON lines in production, readable output in a terminal, and
personal data masked before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PERSONAL_KEYS = {"email", "phone", "first_name", "last_name", "name", "address", "ip"}
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


def mask(value: Any) -> Any:
    """``anna@example.nl`` -> ``a***@example.nl``; other personal values -> ``***``."""
    if isinstance(value, str):
        return _EMAIL.sub(r"\1***@\2", value) if "@" in value else "***"
    return "***"


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in _PERSONAL_KEYS:
            event_dict[key] = mask(event_dict[key])
        elif isinstance(event_dict[key], str) and "@" in event_dict[key] and key != "event":
            event_dict[key] = _EMAIL.sub(r"\1***@\2", event_dict[key])
    return event_dict


def mask_message(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Libraries put addresses in the message itself ("550 <ann@example.nl> rejected");
    our own event names are constants and go through ``mask_personal_data`` only."""
    message = event_dict.get("event")
    if isinstance(message, str) and "@" in message:
        event_dict["event"] = _EMAIL.sub(r"\1***@\2", message)
    return event_dict


def mask_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A rendered traceback quotes whatever the failing code held ("550 <ann@example.nl>
    rejected"); runs after ``format_exc_info`` has turned it into text."""
    text = event_dict.get("exception")
    if isinstance(text, str) and "@" in text:
        event_dict["exception"] = _EMAIL.sub(r"\1***@\2", text)
    return event_dict


class _Drop(logging.Filter):
    """Drops APScheduler's note that a job's previous run is still going. Each job drains
    its queue and may outlast its interval under load; that is the design working (the tick
    is coalesced), not something an operator must act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    """One format for everything the daemon writes: our own structlog events, and the
    standard-library logging of the libraries (APScheduler, uvicorn, SQLAlchemy), whose
    warnings and tracebacks would otherwise interrupt the JSON lines with plain text."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_personal_data,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask_exception, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, mask_message],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_exception,
                renderer,
            ],
        )
    )
    handler.addFilter(_Drop())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warnings.warn becomes a JSON line too

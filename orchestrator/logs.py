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


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_personal_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

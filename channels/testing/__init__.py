"""Test support for channel adapters: a provider double and the conformance kit.

Adapter packages (built-in or third-party) describe their adapter as an ``AdapterCase``
and run ``CHECKS`` against it; see :mod:`channels.testing.conformance`.
"""

from channels.testing.conformance import (
    CHECKS,
    AdapterCase,
    ConformanceFailure,
    body_digest,
    key_in_request,
    kit_recipients,
    run_conformance,
    sample_delivery,
)
from channels.testing.double import Exchange, Outcome, ProviderDouble

__all__ = [
    "CHECKS",
    "AdapterCase",
    "ConformanceFailure",
    "Exchange",
    "Outcome",
    "ProviderDouble",
    "body_digest",
    "key_in_request",
    "kit_recipients",
    "run_conformance",
    "sample_delivery",
]

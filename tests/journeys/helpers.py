"""Shared helpers for the journey-language tests: a catalog like the default configuration
and small functions that load YAML text and return the version or the problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from journeys import Catalog, ChannelInfo, JourneyLoadError, JourneyVersion, Problem, load_texts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "journeys" / "examples"
FILE = "j.yaml"

MEDIUM_EVENTS = {
    "email": frozenset(
        {"email.delivered", "email.opened", "email.clicked", "email.bounced", "email.unsubscribed"}
    ),
    "site": frozenset({"site.viewed", "site.clicked", "site.dismissed"}),
    "audience": frozenset(),
}

#: Two owned channels and one paid one, a few templates and a tracking plan.
CATALOG = Catalog(
    channels={
        "email": ChannelInfo("email", "owned", "email"),
        "site": ChannelInfo("site", "owned", "site"),
        "retargeting": ChannelInfo("retargeting", "paid", "audience", needs_template=False),
    },
    templates=frozenset({"reminder", "banner", "offer"}),
    events=frozenset({"cart_abandoned", "order_completed", "signed_up"}),
    medium_events=MEDIUM_EVENTS,
    segments={"vip": "traits.tier == 'gold'"},
)

#: A small valid journey: email, wait, exit. Tests derive broken variants from text like it.
MINIMAL = """\
journey: t
entry:
  event: cart_abandoned
steps:
  - id: mail
    type: send
    channel: email
    template: reminder
  - id: wait
    type: wait
    for: [email.opened]
    timeout: 2d
    on_reaction: done
    on_timeout: done
  - id: done
    type: exit
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def load(text: str, catalog: Catalog = CATALOG, file: str = FILE) -> JourneyVersion:
    """Load one journey text; fail the test with every problem if it does not load."""
    try:
        loaded = load_texts([(file, dedent(text))], catalog)
    except JourneyLoadError as exc:  # pragma: no cover - a failing test shows why
        pytest.fail(f"journey did not load:\n{exc}")
    (version,) = loaded
    return version


def problems(text: str, catalog: Catalog = CATALOG, file: str = FILE) -> list[Problem]:
    """The problems of one journey text, which must not load."""
    with pytest.raises(JourneyLoadError) as info:
        load_texts([(file, dedent(text))], catalog)
    assert info.value.problems, "a JourneyLoadError must carry at least one problem"
    return info.value.problems

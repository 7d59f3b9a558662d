"""What the configuration offers a journey: channel instances, templates, known events and
shared segments, as plain data.

``journeys`` never imports the channel or orchestrator packages; the orchestrator builds a
Catalog from the configuration and hands it to the loader. That keeps the language testable
with no database and no credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: Events parcours itself emits, whatever channels are configured.
BUILTIN_EVENTS = frozenset({"segment.entered", "segment.exited", "unsubscribed"})


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A configured channel instance as the validator sees it."""

    name: str
    kind: Literal["owned", "paid"]
    medium: str
    needs_template: bool = True


@dataclass(frozen=True, slots=True)
class Catalog:
    """Everything a journey may refer to outside itself.

    ``channels``, ``templates`` and ``events`` may be ``None``: then names are not checked
    against them (a designer previewing a journey with no configuration at hand).
    """

    channels: Mapping[str, ChannelInfo] | None = None
    templates: frozenset[str] | None = None
    #: The tracking plan: events the website/CDP sends.
    events: frozenset[str] | None = None
    #: Reaction events per medium, e.g. {"email": {"email.opened", ...}}.
    medium_events: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Shared segments: name -> condition text.
    segments: Mapping[str, str] = field(default_factory=dict)

    def media(self) -> frozenset[str]:
        return frozenset(c.medium for c in (self.channels or {}).values())


#: A catalog that checks nothing against configuration: for tests and quick previews.
OPEN_CATALOG = Catalog()

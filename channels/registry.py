"""Finds channel adapter factories through the ``parcours.channels`` entry-point group.

Built-ins register through the same group as third-party packages, so nothing here knows
any adapter by name: installing a package that declares an entry point is the whole
plug-in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, cast

from channels.base import ChannelFactory, ChannelKind, ConfigurationError

ENTRY_POINT_GROUP = "parcours.channels"


@cache
def factories() -> Mapping[str, ChannelFactory]:
    """All adapter factories by type name (loaded once per process)."""
    found: dict[str, ChannelFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        found[ep.name] = cast(ChannelFactory, obj() if isinstance(obj, type) else obj)
    return found


def factory(type_name: str) -> ChannelFactory:
    """The factory for ``type_name`` or a ConfigurationError listing the installed ones."""
    known = factories()
    try:
        return known[type_name]
    except KeyError:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(
            f"unknown channel type {type_name!r}; installed types: {names} "
            f"(adapters register in the {ENTRY_POINT_GROUP!r} entry-point group)"
        ) from None


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Static facts about a configured channel instance, known without building it."""

    name: str
    type_name: str
    kind: ChannelKind
    medium: str
    needs_template: bool


def describe(name: str, settings: Mapping[str, Any]) -> ChannelSpec:
    """Facts of a configured instance: the type's own, or ``kind``/``medium`` settings for
    generic types such as ``log`` that can stand in for any medium."""
    type_name = str(settings.get("type", ""))
    if not type_name:
        raise ConfigurationError(f"channel {name!r} has no 'type' (for example type = \"log\")")
    fac = factory(type_name)
    # Types that leave owned/paid to the operator (webhook, log) build as "owned" when the
    # setting is absent; the catalog must classify them the same way.
    kind = settings.get("kind", fac.kind or "owned")
    medium = settings.get("medium", fac.medium)
    if kind not in ("owned", "paid"):
        raise ConfigurationError(f"channel {name!r}: kind must be 'owned' or 'paid', got {kind!r}")
    if not isinstance(medium, str) or not medium:
        raise ConfigurationError(f"channel {name!r}: set medium (email, site, audience, webhook)")
    needs_template = bool(settings.get("needs_template", fac.needs_template))
    return ChannelSpec(name, type_name, cast(ChannelKind, kind), medium, needs_template)

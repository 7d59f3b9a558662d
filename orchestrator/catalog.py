"""Builds the journey ``Catalog`` from the configuration and the installed channel types,
so validation knows which channels are owned or paid without building any adapter."""

from __future__ import annotations

from pathlib import Path

from channels.base import MEDIUM_EVENTS, ConfigurationError
from channels.registry import describe
from journeys.catalog import Catalog, ChannelInfo
from orchestrator.config import ConfigError, Settings

TEMPLATE_SUFFIXES = (".yaml", ".yml")


def template_names(directory: str | Path) -> frozenset[str]:
    d = Path(directory)
    if not d.is_dir():
        return frozenset()
    return frozenset(p.stem for p in d.iterdir() if p.suffix in TEMPLATE_SUFFIXES)


def build_catalog(settings: Settings) -> Catalog:
    channels: dict[str, ChannelInfo] = {}
    for name, conf in settings.channels.items():
        try:
            spec = describe(name, conf)
        except ConfigurationError as exc:
            raise ConfigError(f"{settings.source}: [channels.{name}]: {exc}") from None
        channels[name] = ChannelInfo(name, spec.kind, spec.medium, spec.needs_template)
    known = settings.events.known
    return Catalog(
        channels=channels,
        templates=template_names(settings.templates),
        events=frozenset(known) if known is not None else None,
        medium_events=MEDIUM_EVENTS,
        segments=dict(settings.segments),
    )

"""Wiring: one ``Runtime`` built from settings holds the database, the loaded journeys,
the engine, the channels, templates and tracking configuration.

The daemon, the CLI, the HTTP API and the tests all build the same object, so there is one
place where configuration turns into running parts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine as SqlEngine

from channels.base import Channel
from channels.registry import factory
from channels.templates import TemplateSet
from channels.tracking import TrackingConfig
from journeys import Catalog, JourneySet, load_paths
from orchestrator.catalog import build_catalog
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import ConfigError, Settings
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import check_current
from orchestrator.engine import ChannelFacts, Engine
from orchestrator.versions import VersionRegistry


@dataclass
class Runtime:
    settings: Settings
    db: SqlEngine
    clock: Clock
    catalog: Catalog
    journeys: JourneySet
    registry: VersionRegistry
    engine: Engine
    templates: TemplateSet
    tracking: TrackingConfig
    channels: dict[str, Channel] = field(default_factory=dict)

    async def aclose(self) -> None:
        for ch in self.channels.values():
            await ch.aclose()
        self.db.dispose()


def build_channels(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Build every configured channel instance (secrets from the environment)."""
    env = dict(os.environ if env is None else env)
    out: dict[str, Channel] = {}
    for name, conf in settings.channels.items():
        try:
            out[name] = factory(str(conf.get("type", ""))).build(name, conf, env)
        except ValueError as exc:
            raise ConfigError(f"{settings.source}: [channels.{name}]: {exc}") from None
    return out


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: SqlEngine | None = None,
    check_schema: bool = True,
    channels: dict[str, Channel] | None = None,
    sync: bool = True,
) -> Runtime:
    """Load journeys and templates, open the database, and build the engine.

    Raises ConfigError or JourneyLoadError with messages meant for the operator, and
    SchemaOutdated when the database needs ``parcours db upgrade``.
    """
    clock = clock or SystemClock()
    catalog = build_catalog(settings)
    journeys = load_paths([Path(p) for p in settings.journeys], catalog)
    try:
        templates = TemplateSet.load(settings.templates)
    except ValueError as exc:
        raise ConfigError(f"templates in {settings.templates}: {exc}") from None
    db = db or open_engine(settings.database_url)
    if check_schema:
        check_current(db)
    registry = VersionRegistry(journeys)
    if sync:
        registry.sync(db, clock.now())
    facts = {
        name: ChannelFacts(info.kind, info.medium)
        for name, info in (catalog.channels or {}).items()
    }
    segments = {}
    from journeys import compile_condition
    from journeys.validate import segment_cycle

    for name, text in settings.segments.items():
        segments[name] = compile_condition(text)
    for v in journeys:
        for name in v.definition.segments:
            segments.setdefault(name, v.conditions[("segments", name)])
    refs = {name: cond.segments for name, cond in segments.items()}
    for name in sorted(settings.segments):  # journey files' own are checked when they load
        cycle = segment_cycle(name, refs)
        if cycle:
            raise ConfigError(
                f"{settings.source}: [segments] {name}: defined through itself "
                f"({' -> '.join(cycle)}); break the circle"
            )
    engine = Engine(
        db, registry, clock, facts, segments=segments, batch_size=settings.workers.batch_size
    )
    tracking = TrackingConfig(base_url=settings.http.base_url, key=settings.keys.signing_key)
    return Runtime(
        settings=settings,
        db=db,
        clock=clock,
        catalog=catalog,
        journeys=journeys,
        registry=registry,
        engine=engine,
        templates=templates,
        tracking=tracking,
        channels=channels if channels is not None else build_channels(settings),
    )

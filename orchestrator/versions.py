"""Journey versions at run time: the current one per journey, and every older one still
holding customers.

A loaded journey set is recorded in ``journey_versions`` (definition as canonical JSON) and
``journeys`` (the current version, paused or active). Customers stay on the version they
entered with: when an enrollment names a version that is no longer current, it is compiled
again from the stored definition, once per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from journeys import JourneySet, JourneyVersion, compile_journey
from journeys.schema import Journey
from orchestrator.db import tables as t
from orchestrator.db.sql import upsert


class UnknownVersion(LookupError):
    """An enrollment names a version that is not stored (a corrupt or foreign database)."""


class VersionRegistry:
    """Compiled versions by id, and the current version of each journey."""

    def __init__(self, journey_set: JourneySet | Iterable[JourneyVersion]) -> None:
        self.current: dict[str, JourneyVersion] = {v.name: v for v in journey_set}
        self._by_id: dict[str, JourneyVersion] = {v.version: v for v in self.current.values()}
        self.paused: frozenset[str] = frozenset()

    def get(self, conn: Connection, version: str) -> JourneyVersion:
        found = self._by_id.get(version)
        if found is not None:
            return found
        row = conn.execute(
            select(t.journey_versions.c.definition, t.journey_versions.c.source).where(
                t.journey_versions.c.version == version
            )
        ).first()
        if row is None:
            raise UnknownVersion(f"journey version {version} is not in the database")
        compiled = compile_journey(Journey.model_validate(row.definition), row.source)
        self._by_id[version] = compiled
        return compiled

    def sync(self, engine: Engine, now: datetime) -> None:
        """Record the loaded versions and make them current; read paused journeys."""
        with engine.begin() as conn:
            for v in self.current.values():
                definition = v.definition.model_dump(mode="json", by_alias=True, exclude_none=True)
                upsert(
                    conn,
                    t.journey_versions,
                    {
                        "version": v.version,
                        "journey": v.name,
                        "definition": definition,
                        "source": v.source,
                        "created_at": now,
                    },
                    keys=["version"],
                    update=[],
                )
                upsert(
                    conn,
                    t.journeys,
                    {
                        "name": v.name,
                        "current_version": v.version,
                        "status": "active",
                        "updated_at": now,
                    },
                    keys=["name"],
                    update=["current_version", "updated_at"],
                )
            self.refresh_paused(conn)

    def refresh_paused(self, conn: Connection) -> None:
        rows = conn.execute(select(t.journeys.c.name).where(t.journeys.c.status == "paused"))
        self.paused = frozenset(r.name for r in rows)

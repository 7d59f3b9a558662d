"""Configuration: ``config/parcours.toml`` plus ``PARCOURS_*`` environment variables.

Environment variables win over the file (an operator overrides a deployment without
editing it); nested keys use ``__`` (``PARCOURS_DISPATCH__MAX_ATTEMPTS=3``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from journeys.durations import parse_duration
from journeys.schema import parse_window

DEFAULT_CONFIG = Path("config/parcours.toml")


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 512 * 1024
    max_batch_events: int = 2500
    #: How often the API writes the site-message impressions it buffered (seconds); a
    #: crash loses at most this long of impressions (orchestrator/api/impressions.py).
    impression_flush_seconds: float = Field(0.2, gt=0, le=60)


class KeySettings(_Section):
    write_keys: list[str] = Field(default_factory=list)
    site_keys: list[str] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list)
    signing_key: str = "dev-signing-key-change-me"


class EventSettings(_Section):
    known: list[str] | None = None


class WorkerSettings(_Section):
    poll_interval: float = 0.5
    batch_size: int = 500
    lease_seconds: float = 60.0
    #: How often segments that read event history are re-evaluated for every customer, so
    #: that one that changes with time alone ("no order for 60 days") is announced at most
    #: this late (a duration such as ``15m`` or ``1h``).
    segment_sweep_interval: str = "1h"

    @field_validator("segment_sweep_interval")
    @classmethod
    def _sweep(cls, v: str) -> str:
        parse_duration(v)
        return v


class DispatchSettings(_Section):
    max_attempts: int = 8
    backoff_base: float = 30.0
    backoff_max: float = 6 * 3600.0
    concurrency_per_channel: int = 16


class CapSettings(_Section):
    """A frequency cap: at most ``limit`` marketing sends on ``channel`` (a channel
    instance name, or a medium such as ``email``) per customer within ``period``, counted
    across every journey. Transactional journeys are not capped."""

    channel: str
    limit: int = Field(ge=0)
    period: str = Field(description="a duration such as 24h or 7d")

    @field_validator("period")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class QuietHoursSettings(_Section):
    """The default quiet hours for marketing sends on owned channels, in the customer's own
    timezone (``default_timezone`` when theirs is unknown). A journey's own ``quiet_hours``
    win over these; ``window = ""`` switches the default off."""

    window: str = ""
    default_timezone: str = "Europe/Amsterdam"

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        if v.strip():
            parse_window(v)
        return v.strip()


class ConsentSettings(_Section):
    """Consent: an explicit opt-out (``granted: false``) always blocks a channel; channels
    listed in ``required`` also need an explicit opt-in before anything is sent."""

    required: list[str] = Field(default_factory=list)


class ReportSettings(_Section):
    """Figures for ``parcours report``: what one paid-audience member costs, to estimate the
    budget that owned channels saved."""

    cost_per_audience_member: float | None = Field(None, ge=0)
    currency: str = "EUR"


class Settings(BaseSettings):
    """Everything the daemon and CLI read from configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PARCOURS_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = "sqlite:///parcours.db"
    journeys: list[str] = Field(default_factory=lambda: ["journeys/examples"])
    templates: str = "journeys/examples/templates"
    log_format: str = "auto"
    http: HttpSettings = Field(default_factory=HttpSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    events: EventSettings = Field(default_factory=EventSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    segments: dict[str, str] = Field(default_factory=dict)
    caps: list[CapSettings] = Field(default_factory=list)
    quiet_hours: QuietHoursSettings = Field(default_factory=QuietHoursSettings)
    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    #: Where the settings came from, for messages.
    source: str = "defaults"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment must override them.
        return env_settings, init_settings


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``--config``, ``PARCOURS_CONFIG`` or ``config/parcours.toml`` if
    present) and apply environment variables on top."""
    chosen = path or os.environ.get("PARCOURS_CONFIG")
    file = Path(chosen) if chosen else DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
        data["source"] = str(file)
    elif chosen:
        raise ConfigError(f"configuration file {file} does not exist")
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{file}: invalid configuration:\n" + "\n".join(lines)) from None

"""Reading a channel instance's settings and secrets, with errors a operator can act on.

Settings come from ``config/`` (a mapping); secrets never do: a setting names the
environment variable that holds them (``api_token_env = "POSTMARK_TOKEN"``), so a config
file can be committed and shared. Every failure is a ``ConfigurationError`` that names the
channel, the setting and what would be valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.base import ConfigurationError


class Settings:
    """A typed view of one channel instance's settings and the process environment."""

    def __init__(
        self, channel: str, type_name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> None:
        self.channel = channel
        self.type_name = type_name
        self._settings = settings
        self._env = env

    def _where(self, key: str) -> str:
        return f"channel {self.channel!r} (type {self.type_name!r}): setting {key!r}"

    def has(self, key: str) -> bool:
        value = self._settings.get(key)
        return value is not None and value != ""

    def text(self, key: str, *, example: str) -> str:
        """A required, non-empty string setting."""
        value = self._settings.get(key)
        if value is None or value == "":
            raise ConfigurationError(f"{self._where(key)} is missing (for example {example})")
        if not isinstance(value, str):
            raise ConfigurationError(f"{self._where(key)} must be a string, got {value!r}")
        return value

    def opt_text(self, key: str, default: str | None = None) -> str | None:
        value = self._settings.get(key, default)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise ConfigurationError(f"{self._where(key)} must be a string, got {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self._settings.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f"{self._where(key)} must be a positive number, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value = self._settings.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigurationError(
                f"{self._where(key)} must be a positive integer, got {value!r}"
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._settings.get(key, default)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{self._where(key)} must be true or false, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self._settings.get(key, default)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigurationError(f"{self._where(key)} must be one of {allowed}, got {value!r}")
        return str(value)

    def secret(self, key: str, *, example: str) -> str:
        """The secret in the environment variable named by setting ``key``."""
        var = self.text(key, example=example)
        value = self._env.get(var)
        if not value:
            raise ConfigurationError(
                f"{self._where(key)} names the environment variable {var!r}, which is not set "
                "or empty; export it before starting parcours"
            )
        return value

    def opt_secret(self, key: str) -> str | None:
        if not self.has(key):
            return None
        return self.secret(key, example=f'{key} = "MY_SECRET"')

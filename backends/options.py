"""Readers for a backend's `[models.options]` values, raising ConfigError naming the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.errors import ConfigError


def check_keys(
    options: Mapping[str, Any], known: set[str], sources: tuple[str, ...], described: str
) -> None:
    """No unknown keys, and exactly one of the `sources` keys (`described` in words)."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            unknown[0],
        )
    found = [k for k in sources if options.get(k)]
    if len(found) != 1:
        raise ConfigError(
            f"set exactly one of {described} (found: {', '.join(found) or 'none'})", sources[0]
        )


def string(options: Mapping[str, Any], key: str) -> str:
    value = options[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string", key)
    return value


def integer(options: Mapping[str, Any], key: str, low: int) -> int:
    value = options[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}", key)
    return value


def seconds(options: Mapping[str, Any], key: str, positive: bool) -> float:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number of seconds", key)
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{key} must be {'> 0' if positive else '>= 0'}", key)
    return float(value)

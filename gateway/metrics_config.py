"""The `[metrics]` section: whether `/metrics` is served, and whether it needs an API
key when keys are configured (the default: per-model traffic is for key holders)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    require_api_key: bool = True  # only matters when [server] api_keys is set


def parse_metrics(raw: Any, fail: Callable[[str, str], Exception]) -> MetricsSettings:
    if not isinstance(raw, dict):
        raise fail("metrics", "must be a table")
    known = ("enabled", "require_api_key")
    extra = sorted(set(raw) - set(known))
    if extra:
        raise fail(f"metrics.{extra[0]}", f"unknown key (known: {', '.join(known)})")
    for key in known:
        if key in raw and not isinstance(raw[key], bool):
            raise fail(f"metrics.{key}", "must be true or false")
    return MetricsSettings(**raw)

"""The [server] keys of the HTTP edge (browser safety, connection limits, shutdown),
read into `ServerSettings` by gateway/config.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# key: (lowest, highest); ints stay ints, seconds may be floats
INT_KEYS = {"max_header_bytes": (1024, 16 * 1024 * 1024), "max_connections": (1, 1_000_000)}
SECONDS_KEYS = {
    "header_timeout_seconds": (0.1, 3600.0),
    "body_timeout_seconds": (0.1, 86400.0),
    "keep_alive_seconds": (0.1, 3600.0),
    "shutdown_grace_seconds": (0.0, 86400.0),
}
LIST_KEYS = ("allowed_hosts", "cors_origins")
EDGE_KEYS = frozenset({*INT_KEYS, *SECONDS_KEYS, *LIST_KEYS})
HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|\[?[0-9a-f:.]+\]?)$")
ORIGIN = re.compile(r"^https?://[a-z0-9_.-]+(:\d{1,5})?$|^https?://\[[0-9a-f:.]+\](:\d{1,5})?$")


def parse_edge(raw: dict[str, Any], fail: Callable[[str, str], Exception]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (low, high) in INT_KEYS.items():
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise fail(f"server.{key}", f"must be an integer from {low} to {high}")
            values[key] = value
    for key, (lo, hi) in SECONDS_KEYS.items():
        if key in raw:
            value = raw[key]
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not lo <= value <= hi:
                raise fail(f"server.{key}", f"must be a number of seconds from {lo:g} to {hi:g}")
            values[key] = float(value)
    for key in LIST_KEYS:
        if key in raw:
            items = raw[key]
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise fail(f"server.{key}", "must be a list of strings")
            pattern, example = (
                (HOST, '"gateway.example.com", "*.example.com" or "*"')
                if key == "allowed_hosts"
                else (ORIGIN, '"https://app.example.com" (scheme://host[:port]) or "*"')
            )
            normal = tuple(i.lower().rstrip("/") for i in items)
            for item, norm in zip(items, normal, strict=True):
                if not (norm == "*" or pattern.match(norm)):
                    raise fail(f"server.{key}", f"{item!r} is not valid; write e.g. {example}")
            values[key] = normal
    return values

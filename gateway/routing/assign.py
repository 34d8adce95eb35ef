"""Sticky assignment with no shared state: every replica of the gateway computes the
same variant for the same unit value, with no coordination.

The unit value (a `user`, a hash of the API key, a header's value) is hashed with the
experiment's salt and name by SHA-256; the first 8 bytes, read as an unsigned
big-endian integer over 2**64, give a point in [0, 1), which falls into one variant
of the cumulative weights in their configured order. Changing one weight moves only
the units near the boundaries it shifts (with two variants: only units of the
variant that shrinks); changing the salt reshuffles everyone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from gateway.routing.config import Variant


def unit_hash(salt: str, experiment: str, unit: str) -> str:
    """SHA-256 hex of (salt, experiment, unit), hashed as a JSON array, so no choice of
    strings can make two different triples collide. Records keep this, never the unit."""
    data = json.dumps([salt, experiment, unit], ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def unit_point(salt: str, experiment: str, unit: str) -> float:
    """A point in [0, 1) fixed by (salt, experiment, unit): the first 8 bytes of
    `unit_hash` over 2**64."""
    return int(unit_hash(salt, experiment, unit)[:16], 16) / 2**64


def pick_variant(variants: Sequence[Variant], point: float) -> Variant:
    """The variant whose share of the cumulative weights holds `point` (in [0, 1))."""
    total = sum(v.weight for v in variants)
    target = point * total
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if target < cumulative:
            return variant
    return variants[-1]  # rounding at the very top of the range


def api_key_unit(key: str) -> str:
    """What an API key contributes as a unit: a hash, so the key itself is kept
    nowhere (not in plans, records or logs)."""
    return hashlib.sha256(key.encode()).hexdigest()

"""The `[report]` section: how the experiment report computes its intervals.

[report]
min_n = 30          # a variant with fewer compared requests is "not enough data"
confidence = 0.95   # of every interval
resamples = 2000    # bootstrap resamples (fewer for very large samples: bounded work)
seed = 0            # the bootstrap's seed: the same records give the same report
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.report.build import ReportSettings

KNOWN = ("min_n", "confidence", "resamples", "seed")


def parse_report(raw: Any, fail: Callable[[str, str], Exception]) -> ReportSettings:
    if raw is None:
        return ReportSettings()
    if not isinstance(raw, dict):
        raise fail("report", "must be a table")
    extra = sorted(set(raw) - set(KNOWN))
    if extra:
        raise fail(f"report.{extra[0]}", f"unknown key (known: {', '.join(KNOWN)})")
    values: dict[str, Any] = {}
    for key, low, high in (
        ("min_n", 2, 10_000_000),
        ("resamples", 100, 100_000),
        ("seed", 0, 2**63),
    ):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise fail(f"report.{key}", f"must be an integer from {low} to {high}")
            values[key] = value
    if "confidence" in raw:
        value = raw["confidence"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value < 1:
            raise fail("report.confidence", "must be a number in [0.5, 1), e.g. 0.95")
        values["confidence"] = float(value)
    return ReportSettings(**values)

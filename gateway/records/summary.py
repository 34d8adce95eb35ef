"""Experiment summaries from grouped rows (experiment, variant, route, count, first,
last), the same for every store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.records.model import ExperimentSummary


def summaries(rows: Iterable[Sequence[Any]]) -> list[ExperimentSummary]:
    grouped: dict[str, dict[str, Any]] = {}
    for experiment, variant, route, count, first, last in rows:
        entry = grouped.setdefault(
            experiment, {"counts": {}, "routes": set(), "first": first, "last": last}
        )
        key = variant or ""
        entry["counts"][key] = entry["counts"].get(key, 0) + int(count)
        if route is not None:
            entry["routes"].add(route)
        entry["first"] = min(entry["first"], first)
        entry["last"] = max(entry["last"], last)
    return [
        ExperimentSummary(
            name,
            tuple(sorted(e["counts"])),
            dict(sorted(e["counts"].items())),
            tuple(sorted(e["routes"])),
            float(e["first"]),
            float(e["last"]),
        )
        for name, e in sorted(grouped.items())
    ]

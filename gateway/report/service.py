"""What the report endpoints and `gateway report` share: the experiments a config and a
store know, one experiment's data (read from the store) and its report (CPU work, for a worker
thread), and the `since` parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.records.model import ExperimentSummary, FeedbackRecord, RecordStore, RequestRecord
from gateway.report.build import ReportSettings, VariantSpec, build_report
from gateway.routing.config import RouteConfig

SINCE_HELP = (
    "'since' must be epoch seconds (e.g. 1767225600) or an ISO 8601 time "
    "(e.g. 2026-12-01T00:00:00Z; without an offset it is UTC)."
)


def parse_since(value: str | None) -> float | None:
    """Epoch seconds or ISO 8601; ValueError with SINCE_HELP otherwise."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(SINCE_HELP)
        return number
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(SINCE_HELP) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def configured(routes: Mapping[str, RouteConfig]) -> dict[str, tuple[str, list[VariantSpec]]]:
    """Experiment name -> (route id, its variants as configured now)."""
    out: dict[str, tuple[str, list[VariantSpec]]] = {}
    for route in routes.values():
        exp = route.experiment
        if exp is not None and exp.name not in out:
            out[exp.name] = (
                route.id,
                [VariantSpec(v.name, v.model, v.weight) for v in exp.variants],
            )
    return out


async def list_experiments(
    store: RecordStore, routes: Mapping[str, RouteConfig]
) -> list[dict[str, object]]:
    """Every experiment of the config or the store: its variants and request counts."""
    known = configured(routes)
    stored = {s.name: s for s in await store.experiments()}
    out: list[dict[str, object]] = []
    for name in sorted(set(known) | set(stored)):
        summary = stored.get(name, ExperimentSummary(name, ()))
        route, specs = known.get(name, (None, []))
        weights = {s.name: s for s in specs}
        names = [s.name for s in specs] + [v for v in summary.variants if v not in weights]
        out.append(
            {
                "name": name,
                "route": route or (summary.routes[0] if summary.routes else None),
                "configured": name in known,
                "total": summary.total,
                "first": summary.first,
                "last": summary.last,
                "variants": [
                    {
                        "name": v,
                        "model": weights[v].model if v in weights else None,
                        "weight": weights[v].weight if v in weights else None,
                        "count": int(summary.counts.get(v, 0)),
                    }
                    for v in names
                ],
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a report is computed from, read from the config and the store."""

    name: str
    route: str | None
    variants: list[VariantSpec]
    records: list[RequestRecord]
    feedback: list[FeedbackRecord]
    configured: bool


async def load_experiment(
    store: RecordStore, routes: Mapping[str, RouteConfig], name: str, since: float | None
) -> Loaded | None:
    """None when neither the config nor the store knows the experiment."""
    known = configured(routes)
    if name in known:
        route, specs = known[name]
    else:
        summary = next((s for s in await store.experiments() if s.name == name), None)
        if summary is None:
            return None
        # no longer configured: the weights are unknown, so no sample-ratio check
        route = summary.routes[0] if summary.routes else None
        specs = [VariantSpec(v, None, None) for v in summary.variants]
    records = await store.records(name, since)
    feedback = await store.feedback(name, since)
    return Loaded(name, route, specs, records, feedback, name in known)


def compute(loaded: Loaded, settings: ReportSettings, since: float | None) -> dict[str, object]:
    """CPU work (the bootstrap): call it in a worker thread from the event loop."""
    report = build_report(
        loaded.name,
        loaded.variants,
        loaded.records,
        loaded.feedback,
        settings,
        since,
        loaded.route,
    )
    report["configured"] = loaded.configured
    return report

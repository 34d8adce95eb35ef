"""Build an experiment's report from its records and feedback (a JSON-ready dict).

Which requests count where:
- the sample-ratio check counts every assignment (a fallback keeps its variant);
- the comparison leaves out requests served by a fallback (`fell_back`) and requests
  whose unit value was missing (`unit_missing`, assigned per request): both are counted
  and their share reported;
- latency and throughput use the successful, uncancelled requests that have the value
  (TTFT: streams); error and cancel rates use every compared request;
- feedback: a metric whose values are all booleans is a rate (Wilson), otherwise a mean
  (t interval); it is joined to the compared requests by request id.

The control is the variant named "control", else the experiment's first variant. A
variant with fewer than `min_n` compared requests is marked "not enough data" and no
difference is computed against it.
"""

from __future__ import annotations

import math
import time as clock
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.records.model import FeedbackRecord, RequestRecord
from gateway.report.stats import (
    BootstrapSettings,
    bootstrap,
    compare,
    newcombe,
    resamples_for,
    srm,
    summary,
    t_interval,
    welch,
    wilson,
)

LATENCY_METRICS = ("ttft_ms", "total_ms", "tokens_per_second")
HISTOGRAM_BINS = 30
MAX_TIME_BUCKETS = 60
NOT_ENOUGH = "not enough data"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    min_n: int = 30
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    srm_threshold: float = 0.001


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    model: str | None
    weight: float | None  # None: not configured (any more), so no sample-ratio check


def control_of(variants: Sequence[VariantSpec]) -> str:
    names = [v.name for v in variants]
    return "control" if "control" in names else names[0]


def _compared(r: RequestRecord) -> bool:
    return not r.fell_back and not r.unit_missing


def _ok(r: RequestRecord) -> bool:
    return r.status < 400 and not r.cancelled


def _error(r: RequestRecord) -> bool:
    return (r.status >= 400 or r.error_type is not None) and not r.cancelled


def _values(records: Sequence[RequestRecord], metric: str) -> np.ndarray:
    values = [getattr(r, metric) for r in records if _ok(r)]
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def build_report(
    name: str,
    variants: Sequence[VariantSpec],
    records: Sequence[RequestRecord],
    feedback: Sequence[FeedbackRecord],
    settings: ReportSettings,
    since: float | None = None,
    route: str | None = None,
) -> dict[str, object]:
    boot = BootstrapSettings(settings.resamples, settings.confidence, settings.seed)
    conf = settings.confidence
    specs = list(variants)
    known = {v.name for v in specs}
    for extra in sorted({r.variant for r in records if r.variant and r.variant not in known}):
        specs.append(VariantSpec(extra, None, None))  # recorded under an older config
    control = control_of(specs)
    by_variant: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        if r.variant is not None and _compared(r):
            by_variant[r.variant].append(r)
    fb_by_metric = _feedback_by_metric(feedback)
    total = len(records)

    data = {
        s.name: {m: _values(by_variant.get(s.name, []), m) for m in LATENCY_METRICS} for s in specs
    }
    boots = _bootstraps(name, data, boot)
    rows: list[dict[str, object]] = []
    for spec in specs:
        rs = by_variant.get(spec.name, [])
        row: dict[str, object] = {
            "name": spec.name,
            "model": spec.model,
            "weight": spec.weight,
            "control": spec.name == control,
            "n": len(rs),
            "enough_data": len(rs) >= settings.min_n,
            "metrics": {
                m: summary(data[spec.name][m], boot, boot=boots[spec.name][m])
                for m in LATENCY_METRICS
            },
            "rates": {
                "error_rate": wilson(sum(_error(r) for r in rs), len(rs), conf),
                "cancel_rate": wilson(sum(r.cancelled for r in rs), len(rs), conf),
            },
            "feedback": {},
        }
        ids = {r.request_id for r in rs}
        for metric, (kind, values) in fb_by_metric.items():
            mine = [v for rid, v in values.items() if rid in ids]
            data[spec.name][f"feedback:{metric}"] = np.array(mine, dtype=float)
            if kind == "boolean":
                stat = {"kind": kind, **wilson(sum(bool(v) for v in mine), len(mine), conf)}
            else:
                stat = {"kind": kind, **t_interval(mine, conf)}
            row["feedback"][metric] = stat  # type: ignore[index]
        if not row["enough_data"]:
            row["note"] = NOT_ENOUGH
        rows.append(row)

    comparisons = [
        _comparison(row, _row(rows, control), data, boots, fb_by_metric, boot)
        for row in rows
        if row["name"] != control
    ]
    weighted = {v.name: v.weight for v in variants if v.weight is not None}
    assignments = Counter(r.variant for r in records if r.variant in weighted)
    fell_back = sum(r.fell_back for r in records)
    unit_missing = sum(r.unit_missing for r in records)
    return {
        "object": "experiment.report",
        "experiment": name,
        "route": route,
        "since": since,
        "generated_at": clock.time(),
        "control": control,
        "settings": {
            "min_n": settings.min_n,
            "confidence": conf,
            "resamples": settings.resamples,
            "seed": settings.seed,
        },
        "total": total,
        "compared": sum(len(v) for v in by_variant.values()),
        "excluded": {
            "fell_back": {"count": fell_back, "share": fell_back / total if total else None},
            "unit_missing": {
                "count": unit_missing,
                "share": unit_missing / total if total else None,
            },
        },
        "srm": srm(
            {k: v for k, v in assignments.items() if k is not None},
            weighted,
            settings.srm_threshold,
        ),
        "variants": rows,
        "comparisons": comparisons,
        "plots": {
            "latency": {m: _histograms(data, m) for m in ("total_ms", "ttft_ms")},
            "assignments": _assignments(records, [s.name for s in specs]),
        },
    }


def _row(rows: list[dict[str, object]], name: str) -> dict[str, object]:
    return next(r for r in rows if r["name"] == name)


def _feedback_by_metric(
    feedback: Sequence[FeedbackRecord],
) -> dict[str, tuple[str, dict[str, float | bool]]]:
    values: dict[str, dict[str, float | bool]] = defaultdict(dict)
    for fb in sorted(feedback, key=lambda f: f.time):
        values[fb.metric][fb.request_id] = fb.value  # a repeated (request, metric) overwrites
    out: dict[str, tuple[str, dict[str, float | bool]]] = {}
    for metric in sorted(values):
        kind = "boolean" if all(isinstance(v, bool) for v in values[metric].values()) else "numeric"
        out[metric] = (kind, values[metric])
    return out


def _bootstraps(
    name: str, data: Mapping[str, Mapping[str, np.ndarray]], boot: BootstrapSettings
) -> dict[str, dict[str, np.ndarray | None]]:
    """Each variant's bootstrap per metric, drawn once for its summary and its
    comparisons; one resample count per metric (bounded by the largest sample)."""
    out: dict[str, dict[str, np.ndarray | None]] = {v: {} for v in data}
    for metric in LATENCY_METRICS:
        sizes = [d[metric].size for d in data.values() if d[metric].size >= 2]
        count = min((resamples_for(n, boot.resamples) for n in sizes), default=0)
        for variant, d in data.items():
            out[variant][metric] = bootstrap(d[metric], count, boot, name, variant, metric)
    return out


def _comparison(
    row: dict[str, object],
    ctrl: dict[str, object],
    data: Mapping[str, Mapping[str, np.ndarray]],
    boots: Mapping[str, Mapping[str, np.ndarray | None]],
    fb_by_metric: Mapping[str, tuple[str, object]],
    boot: BootstrapSettings,
) -> dict[str, object]:
    out: dict[str, object] = {"variant": row["name"], "against": ctrl["name"]}
    if not (row["enough_data"] and ctrl["enough_data"]):
        out.update(enough_data=False, note=NOT_ENOUGH, metrics={})
        return out
    tn, cn = str(row["name"]), str(ctrl["name"])
    t, c = data[tn], data[cn]
    metrics: dict[str, object] = {
        m: compare(t[m], c[m], boot, boot_t=boots[tn][m], boot_c=boots[cn][m])
        for m in LATENCY_METRICS
    }
    for rate in ("error_rate", "cancel_rate"):
        rt, rc = row["rates"][rate], ctrl["rates"][rate]  # type: ignore[index]
        metrics[rate] = newcombe(rt["count"], rt["n"], rc["count"], rc["n"], boot.confidence)
    feedback: dict[str, object] = {}
    for metric, (kind, _) in fb_by_metric.items():
        if kind == "boolean":
            ft, fc = row["feedback"][metric], ctrl["feedback"][metric]  # type: ignore[index]
            feedback[metric] = newcombe(ft["count"], ft["n"], fc["count"], fc["n"], boot.confidence)
        else:
            key = f"feedback:{metric}"
            feedback[metric] = welch(t[key], c[key], boot.confidence)
    out.update(enough_data=True, metrics=metrics, feedback=feedback)
    return out


def _histograms(data: Mapping[str, Mapping[str, np.ndarray]], metric: str) -> dict[str, object]:
    """Counts per variant over shared bins from 0 to the largest 99th percentile."""
    tops = [float(np.quantile(d[metric], 0.99)) for d in data.values() if d[metric].size]
    if not tops or max(tops) <= 0:
        return {"edges": [], "counts": {}}
    edges = np.linspace(0.0, max(tops), HISTOGRAM_BINS + 1)
    counts = {
        variant: np.histogram(np.clip(d[metric], 0, edges[-1]), edges)[0].tolist()
        for variant, d in data.items()
        if d[metric].size
    }
    return {"edges": edges.tolist(), "counts": counts}


def _assignments(records: Sequence[RequestRecord], names: Sequence[str]) -> dict[str, object]:
    """Requests per variant per time bucket (at most MAX_TIME_BUCKETS buckets)."""
    times = [r.time for r in records if r.variant in names]
    if not times:
        return {"start": None, "bucket_seconds": None, "counts": {}}
    start, span = min(times), max(times) - min(times)
    bucket = max(1.0, math.ceil(span / MAX_TIME_BUCKETS)) if span else 1.0
    n = int(span // bucket) + 1
    counts = {name: [0] * n for name in names}
    for r in records:
        if r.variant in counts:
            counts[r.variant][int((r.time - start) // bucket)] += 1
    return {"start": start, "bucket_seconds": bucket, "counts": counts}

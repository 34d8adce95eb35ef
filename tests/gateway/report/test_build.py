"""The report built from records and feedback: who is compared, who is only counted,
feedback metrics of both kinds, "not enough data", reproducibility and the plot data."""

from __future__ import annotations

import json

import numpy as np

from gateway.records.model import FeedbackRecord, RequestRecord
from gateway.report.build import ReportSettings, VariantSpec, build_report

VARIANTS = [VariantSpec("control", "smol-a", 50), VariantSpec("treatment", "smol-b", 50)]


def record(i: int, variant: str, rng: np.random.Generator, **changes: object) -> RequestRecord:
    slow = 1.2 if variant == "treatment" else 1.0
    values: dict[str, object] = {
        "time": 1_700_000_000.0 + i,
        "request_id": f"req-{i}",
        "route": "smol",
        "experiment": "exp",
        "variant": variant,
        "served_by": "smol-a",
        "fell_back": False,
        "unit_hash": f"{i:064x}",
        "unit_missing": False,
        "operation": "chat",
        "stream": True,
        "status": 200,
        "error_type": None,
        "cancelled": False,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "ttft_ms": float(rng.lognormal(3, 0.3)) * slow,
        "total_ms": float(rng.lognormal(6, 0.3)) * slow,
        "tokens_per_second": 40.0 / slow,
    }
    values.update(changes)
    return RequestRecord(**values)  # type: ignore[arg-type]


def dataset(n: int = 400) -> tuple[list[RequestRecord], list[FeedbackRecord]]:
    rng = np.random.default_rng(4)
    records = []
    for i in range(n):
        variant = ("control", "treatment")[i % 2]
        changes: dict[str, object] = {}
        if i % 40 in (3, 4):
            changes = {"status": 500, "error_type": "server_error", "ttft_ms": None}
        if i % 50 == 7:
            changes = {"status": 499, "cancelled": True}
        records.append(record(i, variant, rng, **changes))
    records.append(record(n, "treatment", rng, fell_back=True, served_by="smol-a"))
    records.append(record(n + 1, "control", rng, unit_missing=True, unit_hash=None))
    feedback = [FeedbackRecord(f"req-{i}", "accepted", i % 3 == 0, 1.0) for i in range(0, n, 2)]
    feedback += [FeedbackRecord(f"req-{i}", "rating", float(i % 5), 2.0) for i in range(n)]
    # a repeated (request, metric) overwrites: the later value counts
    feedback.append(FeedbackRecord("req-0", "accepted", False, 3.0))
    return records, feedback


def test_counts_exclusions_rates_and_feedback() -> None:
    records, feedback = dataset()
    report = build_report("exp", VARIANTS, records, feedback, ReportSettings(resamples=300))
    assert report["total"] == 402 and report["compared"] == 400
    assert report["excluded"]["fell_back"] == {"count": 1, "share": 1 / 402}
    assert report["excluded"]["unit_missing"] == {"count": 1, "share": 1 / 402}
    # assignments count every request, fallbacks and missing units included
    assert report["srm"]["counts"] == {"control": 201, "treatment": 201}
    assert report["srm"]["flagged"] is False
    control, treatment = report["variants"]
    assert (control["name"], control["control"], control["n"]) == ("control", True, 200)
    assert (treatment["name"], treatment["n"]) == ("treatment", 200)
    for row, parity in ((control, 0), (treatment, 1)):
        errors = sum(1 for i in range(parity, 400, 2) if i % 40 in (3, 4) and i % 50 != 7)
        assert errors > 0 and row["rates"]["error_rate"]["count"] == errors
    cancels = [i for i in range(400) if i % 50 == 7]
    assert control["rates"]["cancel_rate"]["count"] == sum(i % 2 == 0 for i in cancels)
    assert treatment["rates"]["cancel_rate"]["count"] == sum(i % 2 == 1 for i in cancels)
    # latency from successful, uncancelled requests only
    ok = sum(1 for i in range(1, 400, 2) if i % 40 not in (3, 4) and i % 50 != 7)
    assert treatment["metrics"]["total_ms"]["n"] == ok
    accepted = control["feedback"]["accepted"]
    assert accepted["kind"] == "boolean" and accepted["n"] == 200
    assert accepted["count"] == sum(1 for i in range(2, 400, 2) if i % 3 == 0)  # req-0 now False
    assert "accepted" in treatment["feedback"] and treatment["feedback"]["accepted"]["n"] == 0
    rating = treatment["feedback"]["rating"]
    assert rating["kind"] == "numeric" and rating["n"] == 200
    assert rating["value"] == np.mean([float(i % 5) for i in range(1, 400, 2)])
    (comparison,) = report["comparisons"]
    assert comparison["variant"] == "treatment" and comparison["against"] == "control"
    assert comparison["enough_data"] is True
    assert comparison["metrics"]["total_ms"]["mean"]["excludes_zero"] is True
    assert 1.1 < comparison["metrics"]["total_ms"]["mean"]["ratio"]["value"] < 1.3
    assert comparison["feedback"]["rating"]["excludes_zero"] is False
    assert comparison["feedback"]["accepted"]["value"] is None  # no feedback on treatment


def test_the_report_is_reproducible_and_json_ready() -> None:
    records, feedback = dataset()
    first = build_report("exp", VARIANTS, records, feedback, ReportSettings(resamples=300))
    second = build_report("exp", VARIANTS, records, feedback, ReportSettings(resamples=300))
    first.pop("generated_at")
    second.pop("generated_at")
    assert first == second
    assert json.loads(json.dumps(first, allow_nan=False)) == first


def test_not_enough_data_below_min_n() -> None:
    records, feedback = dataset(40)
    report = build_report("exp", VARIANTS, records, feedback, ReportSettings(min_n=30))
    assert [v["enough_data"] for v in report["variants"]] == [False, False]
    assert report["variants"][0]["note"] == "not enough data"
    (comparison,) = report["comparisons"]
    assert comparison["enough_data"] is False and comparison["metrics"] == {}
    enough = build_report("exp", VARIANTS, records, feedback, ReportSettings(min_n=10))
    assert enough["comparisons"][0]["enough_data"] is True


def test_plot_data_latency_histograms_and_assignments_over_time() -> None:
    records, feedback = dataset()
    report = build_report("exp", VARIANTS, records, feedback, ReportSettings(resamples=200))
    latency = report["plots"]["latency"]["total_ms"]
    assert len(latency["edges"]) == 31
    assert sum(latency["counts"]["control"]) == report["variants"][0]["metrics"]["total_ms"]["n"]
    assignments = report["plots"]["assignments"]
    assert sum(assignments["counts"]["control"]) == 201
    assert sum(assignments["counts"]["treatment"]) == 201
    assert len(assignments["counts"]["control"]) <= 61


def test_an_empty_experiment_and_a_variant_no_longer_configured() -> None:
    empty = build_report("exp", VARIANTS, [], [], ReportSettings())
    assert empty["total"] == 0 and empty["srm"]["p_value"] is None
    assert all(v["n"] == 0 for v in empty["variants"])
    json.dumps(empty, allow_nan=False)
    rng = np.random.default_rng(1)
    old = [record(i, "retired", rng) for i in range(5)]
    report = build_report("exp", VARIANTS, old, [], ReportSettings())
    assert [v["name"] for v in report["variants"]] == ["control", "treatment", "retired"]
    assert report["srm"]["counts"] == {"control": 0, "treatment": 0}

"""The report as a terminal table (`gateway report`): one row per metric, one column per
variant (value and interval), then one column per treatment with its difference against
control; `*` marks a difference whose interval excludes zero."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.report.build import LATENCY_METRICS

LABELS = {"ttft_ms": "TTFT ms", "total_ms": "latency ms", "tokens_per_second": "tokens/s"}


def _num(x: float | None, percent: bool = False) -> str:
    if x is None:
        return "-"
    if percent:
        return f"{100 * x:.2f}%"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _cell(stat: Mapping[str, Any] | None, percent: bool = False) -> str:
    if not stat or stat.get("value") is None:
        return "-"
    text = _num(stat["value"], percent)
    if stat.get("low") is not None and stat.get("high") is not None:
        text += f" [{_num(stat['low'], percent)}, {_num(stat['high'], percent)}]"
    return text


def _diff(stat: Mapping[str, Any] | None, percent: bool = False) -> str:
    if not stat or stat.get("value") is None:
        return "-"
    value = stat["value"]
    sign = "+" if value > 0 else ""
    text = sign + _cell(stat, percent)
    ratio = stat.get("ratio")
    if ratio and ratio.get("value") is not None:
        text += f" x{ratio['value']:.3f}"
    return text + (" *" if stat.get("excludes_zero") else "")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "the start"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(report: Mapping[str, Any]) -> str:
    variants = report["variants"]
    comparisons = {c["variant"]: c for c in report["comparisons"]}
    treatments = [v["name"] for v in variants if v["name"] in comparisons]
    conf = round(100 * report["settings"]["confidence"])
    header = ["metric"]
    for v in variants:
        mark = " (control)" if v["control"] and v["name"] != "control" else ""
        header.append(f"{v['name']}{mark} n={v['n']}")
    header += [f"{t} - {report['control']}" for t in treatments]
    rows: list[list[str]] = []

    def add(label: str, cells: list[str], diffs: list[str]) -> None:
        rows.append([label, *cells, *diffs])

    def diff_of(treatment: str, *path: str, percent: bool = False) -> str:
        comparison = comparisons[treatment]
        if not comparison.get("enough_data"):
            return "not enough data"
        node: Any = comparison
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return _diff(node, percent)

    for metric in LATENCY_METRICS:
        for stat in ("mean", "p50", "p95"):
            add(
                f"{LABELS[metric]} {stat}",
                [_cell(v["metrics"][metric][stat]) for v in variants],
                [diff_of(t, "metrics", metric, stat) for t in treatments],
            )
    for rate in ("error_rate", "cancel_rate"):
        add(
            rate.replace("_", " "),
            [_cell(v["rates"][rate], True) for v in variants],
            [diff_of(t, "metrics", rate, percent=True) for t in treatments],
        )
    metrics = sorted({m for v in variants for m in v["feedback"]})
    for metric in metrics:
        kinds = {v["feedback"][m]["kind"] for v in variants for m in [metric] if m in v["feedback"]}
        percent = kinds == {"boolean"}
        add(
            f"feedback {metric} ({'rate' if percent else 'mean'})",
            [_cell(v["feedback"].get(metric), percent) for v in variants],
            [diff_of(t, "feedback", metric, percent=percent) for t in treatments],
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_title(report, conf)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines += _footer(report)
    return "\n".join(lines) + "\n"


def _title(report: Mapping[str, Any], conf: int) -> str:
    route = f" (route {report['route']})" if report.get("route") else ""
    return (
        f"Experiment {report['experiment']}{route}: {report['total']} requests since "
        f"{_when(report.get('since'))}, {report['compared']} compared; "
        f"values [{conf} % interval]\n"
    )


def _footer(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for key in ("fell_back", "unit_missing"):
        item = report["excluded"][key]
        share = f" ({_num(item['share'], True)})" if item["share"] is not None else ""
        lines.append(f"excluded, {key}: {item['count']}{share}")
    srm = report["srm"]
    if srm["p_value"] is None:
        lines.append("sample ratio: not checked (no weights or no assignments)")
    else:
        verdict = "MISMATCH: do not trust the comparison" if srm["flagged"] else "ok"
        lines.append(f"sample ratio: chi2 {srm['chi2']:.2f}, p {srm['p_value']:.3g}: {verdict}")
    small = [v["name"] for v in report["variants"] if not v["enough_data"]]
    if small:
        min_n = report["settings"]["min_n"]
        lines.append(f"not enough data (n < {min_n}): {', '.join(small)}")
    lines.append("* the interval of the difference excludes zero")
    return lines

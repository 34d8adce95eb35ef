"""Summaries of request records, target checks, the markdown table and the PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.prompts import MAX_TOKENS

CONTENDERS = {
    "bare": "(d) bare N-sequence loop",
    "single": "(a) llama-cpp-python in-process, one stream",
    "gateway": "(c) this gateway",
    "gateway_process": "(c') this gateway, isolation = process",
    "server": "(b) llama_cpp.server (defaults)",
    "server_nointerrupt": "(b') llama_cpp.server --interrupt_requests False",
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def truncated(record: dict[str, Any]) -> bool:
    return (
        not record["done"]
        or record.get("error") is not None
        or record["finish_reason"] != "length"
        or record["tokens"] < MAX_TOKENS
    )


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    records = run["records"]
    ttft = [r["stamps"][0] * 1000 for r in records if r["stamps"]]
    itl = [
        (b - a) * 1000 for r in records for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)
    ]
    tokens = sum(r["tokens"] for r in records)
    out = {
        "requests": len(records),
        "tokens": tokens,
        "wall_s": round(run["wall"], 3),
        "tokens_per_s": round(tokens / run["wall"], 2),
        "ttft_ms_p50": _r(percentile(ttft, 0.5)),
        "ttft_ms_p95": _r(percentile(ttft, 0.95)),
        "itl_ms_p50": _r(percentile(itl, 0.5)),
        "itl_ms_p95": _r(percentile(itl, 0.95)),
        "truncated": sum(truncated(r) for r in records),
    }
    cut = [r for r in records if truncated(r)]
    if cut:
        out["truncated_examples"] = [
            {k: r.get(k) for k in ("tokens", "finish_reason", "done", "error")} for r in cut[:3]
        ]
    if "decode_tps" in run:
        out["decode_only_tokens_per_s"] = round(run["decode_tps"], 2)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def targets(model: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, as ratios within one run of one model."""
    runs = model["runs"]

    def tps(name: str, n: int) -> float | None:
        stats = runs.get(name, {}).get(str(n))
        return stats["tokens_per_s"] if stats else None

    out: dict[str, Any] = {}
    for n in (1, 4, 8):
        r = ratio(tps("gateway", n), tps("bare", n))
        out[f"gateway_vs_bare_c{n}"] = {"ratio": r, "target": 0.9, "met": bool(r and r >= 0.9)}
    for n, goal in ((4, 2.0), (8, 2.7)):
        r = ratio(tps("gateway", n), tps("gateway", 1))
        out[f"scaling_c{n}_vs_c1"] = {"ratio": r, "target": goal, "met": bool(r and r >= goal)}
    r = ratio(tps("gateway", 4), tps("server", 4))
    gw4 = runs.get("gateway", {}).get("4", {})
    out["c4_vs_llama_cpp_server"] = {
        "ratio": r,
        "target": 2.0,
        "gateway_truncated": gw4.get("truncated"),
        "server_truncated": runs.get("server", {}).get("4", {}).get("truncated"),
        "met": bool(r and r >= 2.0 and gw4.get("truncated") == 0),
    }
    for n in (1, 8):  # a worker process costs little on the hot path
        iso, plain = (
            runs.get("gateway_process", {}).get(str(n)),
            runs.get("gateway", {}).get(str(n)),
        )
        if iso and plain:
            r = ratio(iso["tokens_per_s"], plain["tokens_per_s"])
            # TTFT: lower is better, so the in-process TTFT over the worker's
            t = ratio(plain["ttft_ms_p50"], iso["ttft_ms_p50"])
            out[f"process_vs_in_process_c{n}"] = {
                "tokens_per_s_ratio": r,
                "ttft_p50_ratio": t,
                "target": 0.95,
                "met": bool(r and t and r >= 0.95 and t >= 0.95),
            }
    if "health" in model:
        p99 = model["health"]["p99_ms"]
        out["health_p99_under_50ms"] = {"p99_ms": p99, "met": p99 is not None and p99 < 50}
    if "memory" in model:
        out["memory"] = {"met": model["memory"]["met"]}
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for model in results["models"]:
        lines += [
            f"### {model['name']}",
            "",
            "| contender | N | tokens/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | "
            "truncated / requests |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, by_n in model["runs"].items():
            for n, s in sorted(by_n.items(), key=lambda kv: int(kv[0])):
                lines.append(
                    f"| {CONTENDERS[name]} | {n} | {s['tokens_per_s']:.1f} | "
                    f"{s['ttft_ms_p50']} / {s['ttft_ms_p95']} | "
                    f"{s['itl_ms_p50']} / {s['itl_ms_p95']} | {s['truncated']} / {s['requests']} |"
                )
        lines.append("")
        for key, t in model.get("targets", {}).items():
            lines.append(f"- {key}: {t}")
        for key in ("health", "prefix_reuse", "memory"):
            if key in model:
                lines.append(f"- {key}: {model[key]}")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        for name, by_n in model["runs"].items():
            ns = sorted(int(n) for n in by_n)
            stats = [by_n[str(n)] for n in ns]
            style = "o-" if len(ns) > 1 else "s"
            axes[0][col].plot(ns, [s["tokens_per_s"] for s in stats], style, label=CONTENDERS[name])
            ttft = [s["ttft_ms_p95"] for s in stats]
            axes[1][col].plot(ns, ttft, style, label=CONTENDERS[name])
        axes[0][col].set_title(f"{model['name']}: aggregate tokens/s (64 new tokens, T=0)")
        axes[1][col].set_title(f"{model['name']}: TTFT p95 (ms)")
        for ax in axes[:, col]:
            ax.set_xlabel("concurrent streams")
            ax.set_xticks([1, 2, 4, 8])
            ax.grid(alpha=0.3)
        axes[1][col].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"{results['threads']} thread(s) per contender, one run ({results['started']})", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None

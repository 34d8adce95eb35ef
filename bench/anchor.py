"""The engine against llama.cpp's own C++ server (`llama-server`), same run, same GGUF,
same llama.cpp source and CMake flags, 1 decode thread each, 8 slots of 1,024 tokens.

    .venv/bin/python -m bench.throughput --anchor            # both models, a few minutes each
    .venv/bin/python -m bench.throughput --anchor --quick    # under a minute (SmolLM2, N=1,8)

For each N in 1, 2, 4, 8, 16, N clients start at the same instant (a burst) and each
sends its requests back to back (two each, one at N=16): streaming `/v1/completions`,
temperature 0, 48 tokens.
Every request's prompt starts with a tag that no earlier request to the same server used, so
neither server answers from a prompt cache: the figures are the engines' own. Within a run,
every contender gets the same prompts. Contenders alternate which goes first and each
level runs twice (per figure the better run is kept). Then a long-prompt mix
(200-800 tokens, where prefill dominates), and the determinism check: 24 prompts alone,
then 8 at a time, must give the same text. Reports, per level: tokens/s, time to first
token of the burst (p50), inter-token latency (p95) and their ratios to llama-server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import servers
from bench.concurrency_check import CHECK_PROMPTS
from bench.llama_server import build as build_llama_server
from bench.load import RequestRecord, stream_one
from bench.models import BenchModel
from bench.prompts import PROMPTS
from bench.report import percentile

SLOTS = 8
SLOT_CTX = 1024
MAX_TOKENS = 48
LONG_CLIENTS = 4
FILLER = (
    "The committee reviewed the quarterly figures line by line, noting where spending had "
    "drifted from the plan and why. "
    "Each department explained its choices, and the minutes record every question asked. "
    "Nobody expected the discussion to run past noon, yet the agenda kept growing. "
)


def burst_prompts(tag: str, clients: int, rounds: int) -> list[list[str]]:
    """Per client, its prompts in order; each starts with a tag used nowhere else."""
    return [
        [f"({tag}.{c}.{r}) {PROMPTS[(c * 5 + r * 7) % len(PROMPTS)]}" for r in range(rounds)]
        for c in range(clients)
    ]


def long_prompts(tag: str, clients: int, count: Callable[[str], int]) -> list[list[str]]:
    """One long prompt per client, from 200 to 800 tokens as the model's own tokenizer
    counts them (`count`), spread evenly."""
    out = []
    for c in range(clients):
        want = 200 + (600 * c) // max(1, clients - 1)
        head, tail = f"({tag}.{c}) ", " In short,"
        chars = 4 * want
        while True:
            text = head + (FILLER * (chars // len(FILLER) + 1))[:chars] + tail
            have = count(text)
            if abs(have - want) <= want // 20:
                break
            chars = max(1, chars * want // max(1, have))
        out.append([text])
    return out


def token_counter(base_url: str) -> Callable[[str], int]:
    """Prompt tokens as the gateway's /tokenize counts them (the same GGUF tokenizer
    llama-server uses)."""

    def count(text: str) -> int:
        r = httpx.post(f"{base_url}/tokenize", json={"content": text}, timeout=60)
        r.raise_for_status()
        return len(r.json()["tokens"])

    return count


def body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _burst(base_url: str, prompts: list[list[str]], max_tokens: int) -> dict[str, Any]:
    url = f"{base_url}/v1/completions"
    limits = httpx.Limits(max_connections=len(prompts) + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        t_run = time.perf_counter()

        async def one_client(mine: list[str]) -> list[RequestRecord]:
            return [await stream_one(client, url, body(p, max_tokens), t_run) for p in mine]

        per_client = await asyncio.gather(*(one_client(p) for p in prompts))
        wall = time.perf_counter() - t_run
    return {"wall": wall, "per_client": per_client}


def measure(base_url: str, prompts: list[list[str]], max_tokens: int = MAX_TOKENS) -> dict:
    run = asyncio.run(_burst(base_url, prompts, max_tokens))
    records: list[RequestRecord] = [r for recs in run["per_client"] for r in recs]
    errors = [r.error for r in records if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}")
    first = [recs[0].stamps[0] for recs in run["per_client"] if recs[0].stamps]
    every = [r.stamps[0] for r in records if r.stamps]
    gaps = [b - a for r in records for a, b in zip(r.stamps, r.stamps[1:], strict=False)]
    tokens = sum(r.tokens for r in records)
    return {
        "requests": len(records),
        "tokens": tokens,
        "wall_s": round(run["wall"], 3),
        "tokens_per_s": round(tokens / run["wall"], 2),
        "ttft_burst_p50_s": _r(percentile(first, 0.5)),
        "ttft_p50_s": _r(percentile(every, 0.5)),
        "itl_p50_ms": _r(1000 * (percentile(gaps, 0.5) or 0)),
        "itl_p95_ms": _r(1000 * (percentile(gaps, 0.95) or 0)),
        "itl_max_ms": _r(1000 * max(gaps, default=0)),
        "texts": [r.text for r in records],
    }


ENGINE_KEYS = ("steps", "decoded_tokens", "micro_batches", "decode_ms", "python_ms")


def engine_counters(proc: servers.ServerProcess) -> dict[str, int] | None:
    """The gateway engine's running sums (None for llama-server)."""
    if not proc.name.startswith("gateway"):
        return None
    stats = servers.backend_details(proc.base_url)["stats"]
    assert isinstance(stats, dict)
    return {k: int(stats[k]) for k in ENGINE_KEYS}


def per_step(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Where the engine's steps went during one run: per step, tokens decoded, the
    micro-batches llama.cpp ran, milliseconds inside llama_decode and in Python."""
    d = {k: after[k] - before[k] for k in ENGINE_KEYS}
    steps = max(1, d["steps"])
    return {
        "steps": d["steps"],
        "tokens_per_step": round(d["decoded_tokens"] / steps, 2),
        "micro_batches_per_step": round(d["micro_batches"] / steps, 2),
        "decode_ms_per_step": round(d["decode_ms"] / steps, 2),
        "python_ms_per_step": round(d["python_ms"] / steps, 2),
        "python_share": round(d["python_ms"] / max(1, d["decode_ms"] + d["python_ms"]), 3),
    }


def measure_proc(proc: servers.ServerProcess, prompts: list[list[str]]) -> dict[str, Any]:
    before = engine_counters(proc)
    out = measure(proc.base_url, prompts)
    after = engine_counters(proc)
    if before is not None and after is not None:
        out["engine"] = per_step(before, after)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the better of the runs: the least disturbed one on a shared machine."""
    out = dict(max(runs, key=lambda r: r["tokens_per_s"]))  # with its engine figures
    out["all_tokens_per_s"] = [r["tokens_per_s"] for r in runs]
    for key in ("ttft_burst_p50_s", "ttft_p50_s", "itl_p50_ms", "itl_p95_ms"):
        out[key] = min(r[key] for r in runs if r[key] is not None)
    out.pop("texts", None)
    return out


def ratios(mine: dict[str, Any], anchor: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "tokens_per_s": div(mine["tokens_per_s"], anchor["tokens_per_s"]),
        "ttft_burst_p50": div(mine["ttft_burst_p50_s"], anchor["ttft_burst_p50_s"]),
        "itl_p95": div(mine["itl_p95_ms"], anchor["itl_p95_ms"]),
    }


def determinism(base_url: str, max_tokens: int) -> dict[str, Any]:
    """24 prompts alone, then 8 at a time: how many texts are identical."""
    alone = [measure(base_url, [[p]], max_tokens)["texts"][0] for p in CHECK_PROMPTS]
    together: list[str] = []
    for k in range(0, len(CHECK_PROMPTS), SLOTS):
        group = [[p] for p in CHECK_PROMPTS[k : k + SLOTS]]
        together += measure(base_url, group, max_tokens)["texts"]
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    return {"identical": same, "of": len(CHECK_PROMPTS), "max_tokens": max_tokens}


def contenders(
    model: BenchModel, workdir: Path, threads: int, unified: bool
) -> dict[str, servers.ServerProcess]:
    binary = build_llama_server()
    out = {
        "gateway": servers.gateway(model.path, workdir, SLOTS, threads, n_ctx=SLOT_CTX),
        "llama-server": servers.llama_server(binary, model.path, workdir, SLOTS, SLOT_CTX, threads),
    }
    if unified:
        out["gateway-unified"] = servers.gateway(
            model.path,
            workdir,
            SLOTS,
            threads,
            n_ctx=SLOT_CTX,
            extra="deterministic = false\n",
            tag="-unified",
        )
    return out


def run_model(
    model: BenchModel,
    workdir: Path,
    levels: list[int],
    repeat: int,
    threads: int,
    quick: bool,
    unified: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    procs = contenders(model, workdir, threads, unified)
    names = list(procs)
    result: dict[str, Any] = {"name": model.name, "levels": {}, "long_mix": {}}
    started = [p.start() for p in procs.values()]
    try:
        for p in started:  # warm up: first decode, thread pools, connections
            measure(p.base_url, [["(warm) Hello"]], 8)
        for n in levels:
            rounds = 1 if quick or n >= 16 else 2  # N=16: 16 requests already
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
            for rep in range(repeat):
                order = names if rep % 2 == 0 else names[::-1]
                for name in order:
                    # every contender gets the same prompts, tagged for this level and run
                    prompts = burst_prompts(f"{n}.{rep}", n, rounds)
                    runs[name].append(measure_proc(procs[name], prompts))
            level = {k: best(v) for k, v in runs.items()}
            for k in names[:1] + names[2:]:
                level[k]["vs_llama_server"] = ratios(level[k], level["llama-server"])
            result["levels"][str(n)] = level
            log(
                f"{model.name} N={n}: "
                + ", ".join(
                    f"{k} {v['tokens_per_s']:.1f} tok/s ttft {v['ttft_burst_p50_s']:.3f} s "
                    f"itl95 {v['itl_p95_ms']:.0f} ms"
                    for k, v in level.items()
                )
            )
        if not quick:
            count = token_counter(procs["gateway"].base_url)
            runs = {k: [] for k in names}
            for rep in range(repeat):
                for name in names if rep % 2 == 0 else names[::-1]:
                    prompts = long_prompts(f"L{rep}", LONG_CLIENTS, count)
                    runs[name].append(measure_proc(procs[name], prompts))
            mix = {k: best(v) for k, v in runs.items()}
            for k in names[:1] + names[2:]:
                mix[k]["vs_llama_server"] = ratios(mix[k], mix["llama-server"])
            result["long_mix"] = {"clients": LONG_CLIENTS, **mix}
            log(f"{model.name} long mix: {json.dumps(mix)}")
        result["determinism"] = determinism(procs["gateway"].base_url, 16 if quick else 32)
        log(f"{model.name} determinism: {result['determinism']}")
    finally:
        for p in procs.values():
            p.stop()
    return result


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | N | gateway tok/s | llama-server tok/s | ratio | TTFT p50 (burst) "
        "gateway / llama-server | ratio | ITL p95 gateway / llama-server | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        rows = list(m["levels"].items())
        if m.get("long_mix"):
            rows.append((f"long, {m['long_mix']['clients']} clients", m["long_mix"]))
        for n, level in rows:
            g, s = level["gateway"], level["llama-server"]
            r = g["vs_llama_server"]
            lines.append(
                f"| {m['name']} | {n} | {g['tokens_per_s']:.1f} | {s['tokens_per_s']:.1f} | "
                f"{r['tokens_per_s']} | {g['ttft_burst_p50_s']:.3f} / "
                f"{s['ttft_burst_p50_s']:.3f} s | {r['ttft_burst_p50']} | "
                f"{g['itl_p95_ms']:.0f} / {s['itl_p95_ms']:.0f} ms | {r['itl_p95']} |"
            )
    for m in results["models"]:
        d = m["determinism"]
        lines.append(
            f"\n{m['name']}: {d['identical']}/{d['of']} outputs identical alone vs 8 at a "
            f"time ({d['max_tokens']} tokens, temperature 0)."
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Per model: tokens/s, burst TTFT p50 and ITL p95 against N, one line a contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    rows = (
        ("tokens_per_s", "tokens/s (48 new tokens, T=0)", 1.0),
        ("ttft_burst_p50_s", "TTFT p50 of the burst (ms)", 1000.0),
        ("itl_p95_ms", "inter-token latency p95 (ms)", 1.0),
    )
    fig, axes = plt.subplots(len(rows), len(models), figsize=(5.5 * len(models), 10), squeeze=False)
    for col, model in enumerate(models):
        ns = sorted(int(n) for n in model["levels"])
        names = list(model["levels"][str(ns[0])])
        for row, (key, title, scale) in enumerate(rows):
            ax = axes[row][col]
            for name in names:
                ys = [model["levels"][str(n)][name][key] * scale for n in ns]
                ax.plot(ns, ys, "o-", label=name)
            ax.set_title(f"{model['name']}: {title}", fontsize=10)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.set_xlabel("clients arriving at once")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"gateway vs llama.cpp's llama-server, {results['threads']} decode thread each, "
        f"{results['slots']} slots, one run ({results['started']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

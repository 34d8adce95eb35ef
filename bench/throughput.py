"""Served throughput and latency: this gateway against llama-cpp-python, in one run.

    .venv/bin/python -m bench.throughput            # full: both models, about 5 min each
    .venv/bin/python -m bench.throughput --quick    # about a minute (SmolLM2, N=1,4,8)
    .venv/bin/python -m bench.throughput --models bloomz --levels 1,4,8

For each model and each concurrency N it runs, back to back so that they see the same
machine load: (d) the bare N-sequence decode loop, (c) the gateway, (c') the gateway with
the model in a worker process (`isolation = "process"`, N=1 and 8), (b) llama-cpp-python's
server with its defaults; plus (a) the in-process one-stream loop, (b') the server with
`--interrupt_requests False` at N=4, /health latency while 8 streams run, the
prefix-reuse TTFT gain and the memory check. Results go to bench/results/ (quick runs:
bench/results/quick/, untracked).

    .venv/bin/python -m bench.throughput --anchor [--unified]   # against llama-server

`--anchor` instead runs the gateway against llama.cpp's own C++ `llama-server` (built
once from the same llama.cpp source and flags, see bench/llama_server.py) at N = 1, 2,
4, 8, 16 and a long-prompt mix; `--unified` adds the gateway with one unified KV cache
(`deterministic = false`). See bench/anchor.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import anchor, servers
from bench.load import HealthProbe, completion_body, run_load, stream_one
from bench.models import BenchModel, resolve
from bench.paths import results_dir
from bench.report import markdown, percentile, plot, summarise, targets

MEMORY_SLACK = 300 * 2**20


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rounds_for(n: int, quick: bool) -> int:
    """Requests per client: enough for a steady state, within the time budget."""
    if quick:
        return 1
    return 3 if n == 1 else 2


def keep_best(by_n: dict[str, Any], n: int, stats: dict[str, Any]) -> None:
    """Keep the run with the most tokens/s; remember every run's figure."""
    previous = by_n.get(str(n))
    all_runs = [*(previous["all_tokens_per_s"] if previous else []), stats["tokens_per_s"]]
    if previous is None or stats["tokens_per_s"] > previous["tokens_per_s"]:
        by_n[str(n)] = stats
    by_n[str(n)]["all_tokens_per_s"] = all_runs


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def rawloop(args: list[str], workdir: Path) -> dict[str, Any]:
    with (workdir / "rawloop.log").open("ab") as err:
        out = subprocess.run(
            [sys.executable, "-m", "bench.rawloop", *args],
            check=True,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=servers.ROOT,
        )
    return json.loads(out.stdout)


def load(server: servers.ServerProcess, n: int, rounds: int, usage: bool) -> dict[str, Any]:
    return asyncio.run(run_load(server.base_url, "bench", n, rounds, usage))


def warm_up(server: servers.ServerProcess, usage: bool) -> None:
    load(server, 1, 1, usage)


def bench_model(model: BenchModel, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    levels: list[int] = opts.levels
    threads = str(opts.threads)
    runs: dict[str, dict[str, Any]] = {
        "bare": {},
        "single": {},
        "gateway": {},
        "gateway_process": {},
        "server": {},
    }
    result: dict[str, Any] = {"name": model.name, "file_bytes": model.path.stat().st_size}
    gateway = servers.gateway(model.path, workdir, 8, opts.threads)
    isolated = servers.gateway(model.path, workdir, 8, opts.threads, isolation="process")
    server = servers.llama_cpp_server(model.path, workdir, opts.threads)
    with gateway, isolated, server:
        warm_up(gateway, True)
        warm_up(isolated, True)
        warm_up(server, False)
        log(f"{model.name}: (a) in-process one stream")
        runs["single"]["1"] = summarise(
            rawloop(["single", str(model.path), str(rounds_for(1, opts.quick)), threads], workdir)
        )
        for n in levels:
            rounds = rounds_for(n, opts.quick)
            log(f"{model.name}: N={n}, {rounds} request(s) per client")
            # Contenders back to back, repeated, best run kept: the machine is shared, and
            # the best of a few runs is the least disturbed one.
            for rep in range(opts.repeat):
                bare = summarise(
                    rawloop(["multiseq", str(model.path), str(n), str(rounds), threads], workdir)
                )
                keep_best(runs["bare"], n, bare)
                if n == 8 and rep == 0:
                    with HealthProbe(gateway.base_url) as probe:
                        gw = summarise(load(gateway, n, rounds, True))
                    result["health"] = {
                        "probes": len(probe.latencies_ms),
                        "p50_ms": _r(percentile(probe.latencies_ms, 0.5)),
                        "p99_ms": _r(percentile(probe.latencies_ms, 0.99)),
                        "max_ms": _r(max(probe.latencies_ms, default=None)),
                    }
                else:
                    gw = summarise(load(gateway, n, rounds, True))
                keep_best(runs["gateway"], n, gw)
                if n in (1, 8):  # the same model in a worker process, right after
                    keep_best(
                        runs["gateway_process"], n, summarise(load(isolated, n, rounds, True))
                    )
                if rep == 0:
                    runs["server"][str(n)] = summarise(load(server, n, rounds, False))
                iso = runs["gateway_process"].get(str(n), {}).get("tokens_per_s", 0.0)
                log(
                    f"  tokens/s: bare {bare['tokens_per_s']:.1f}, gateway "
                    f"{gw['tokens_per_s']:.1f} (in a worker {iso:.1f}), llama_cpp.server "
                    f"{runs['server'][str(n)]['tokens_per_s']:.1f}  (load {load_average()})"
                )
        result["prefix_reuse"] = prefix_reuse(gateway, opts.quick)
        result["backend"] = servers.backend_details(gateway.base_url)
        rss8 = gateway.rss_bytes()
        result["server_rss_bytes"] = server.rss_bytes()
    if not opts.quick and 4 in levels:
        log(f"{model.name}: llama_cpp.server --interrupt_requests False, N=4")
        with servers.llama_cpp_server(model.path, workdir, opts.threads, interrupt=False) as s2:
            warm_up(s2, False)
            runs["server_nointerrupt"] = {"4": summarise(load(s2, 4, rounds_for(4, False), False))}
    result["memory"] = memory_check(model, workdir, opts.threads, rss8, result["backend"])
    result["runs"] = runs
    result["targets"] = targets(result)
    return result


def prefix_reuse(gateway: servers.ServerProcess, quick: bool) -> dict[str, Any]:
    """TTFT of a long prompt whose prefix is already in a slot's KV cache (the editor
    pattern) against a cold prompt of the same length."""

    def source_file(k: int) -> str:
        body = "".join(f"def helper_{k}_{i}(x):\n    return x * {i} + {k}\n\n" for i in range(10))
        return f"# module {k}: generated helpers\n{body}"

    async def ttft(client: httpx.AsyncClient, prompt: str) -> float:
        body = completion_body("bench", prompt, False) | {"max_tokens": 4}
        rec = await stream_one(client, f"{gateway.base_url}/v1/completions", body, 0.0)
        return rec.stamps[0] * 1000

    async def measure() -> dict[str, Any]:
        hot: list[float] = []
        cold: list[float] = []
        before = servers.backend_details(gateway.base_url)["stats"]
        async with httpx.AsyncClient(timeout=600) as client:
            for k in range(2 if quick else 4):
                await ttft(client, source_file(k) + "def first_edit(")  # fills a slot
                hot.append(await ttft(client, source_file(k) + "def second_edit("))
                cold.append(await ttft(client, source_file(1000 + k) + "def second_edit("))
        after = servers.backend_details(gateway.base_url)["stats"]
        hot_ms, cold_ms = percentile(hot, 0.5), percentile(cold, 0.5)
        return {
            "prompt_chars": len(source_file(0)) + 16,
            "cold_ttft_ms_p50": _r(cold_ms),
            "reused_ttft_ms_p50": _r(hot_ms),
            "speedup": round(cold_ms / hot_ms, 2) if cold_ms and hot_ms else None,
            "prefix_reused_tokens": int(after["prefix_reused_tokens"])
            - int(before["prefix_reused_tokens"]),
        }

    return asyncio.run(measure())


def memory_check(
    model: BenchModel, workdir: Path, threads: int, rss8: int, details8: dict[str, Any]
) -> dict[str, Any]:
    """One copy of the weights whatever `parallel` is: RSS with 8 slots within weights +
    KV + 300 MB, and 1 slot vs 8 slots differing by about the KV difference only."""
    with servers.gateway(model.path, workdir, 1, threads) as gw1:
        warm_up(gw1, True)
        rss1 = gw1.rss_bytes()
        details1 = servers.backend_details(gw1.base_url)
    weights = model.path.stat().st_size
    kv8, kv1 = int(details8["kv_cache_bytes"]), int(details1["kv_cache_bytes"])
    budget = weights + kv8 + MEMORY_SLACK
    extra = (rss8 - rss1) - (kv8 - kv1)
    mib = 2**20
    return {
        "weights_mib": round(weights / mib, 1),
        "kv_mib_parallel8": round(kv8 / mib, 1),
        "kv_mib_parallel1": round(kv1 / mib, 1),
        "rss_mib_parallel8": round(rss8 / mib, 1),
        "rss_mib_parallel1": round(rss1 / mib, 1),
        "budget_mib": round(budget / mib, 1),
        "rss8_minus_weights_kv_mib": round((rss8 - weights - kv8) / mib, 1),
        "rss_diff_beyond_kv_diff_mib": round(extra / mib, 1),
        "met": rss8 <= budget,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: one request per client, SmolLM2 only, N=1,4,8 (unless given)",
    )
    parser.add_argument("--models", default=None, help="bloomz,smollm2 (the default)")
    parser.add_argument("--levels", default=None, help="concurrency levels (default 1,2,4,8)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per N (best kept)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--out", default=None, help="results name (default: a timestamp)")
    parser.add_argument("--anchor", action="store_true", help="against llama.cpp's llama-server")
    parser.add_argument(
        "--unified", action="store_true", help="with --anchor: add deterministic = false"
    )
    opts = parser.parse_args(argv)
    if opts.anchor:
        run_anchor(opts)
        return
    opts.models = opts.models or ("smollm2" if opts.quick else "bloomz,smollm2")
    opts.levels = [
        int(x) for x in (opts.levels or ("1,4,8" if opts.quick else "1,2,4,8")).split(",")
    ]
    opts.repeat = opts.repeat or (1 if opts.quick else 2)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    out = results_dir(opts.quick)
    results: dict[str, Any] = {
        "started": started,
        "repeat": opts.repeat,
        "load_average_at_start": load_average(),
        "quick": opts.quick,
        "threads": opts.threads,
        "levels": opts.levels,
        "models": [],
    }
    t0 = time.perf_counter()
    results["models"] = per_model(
        opts.models, "", out, lambda model, tmp: bench_model(model, opts, tmp)
    )
    results["seconds"] = round(time.perf_counter() - t0, 1)
    name = opts.out or ("quick" if opts.quick else f"run-{started.replace(':', '')}")
    publish(results, out / name, markdown, plot)


def per_model(
    models: str,
    prefix: str,
    out: Path,
    bench: Callable[[BenchModel, Path], dict[str, Any]],
) -> list[dict[str, Any]]:
    """`bench` for each model in turn, in a temporary folder; the servers' logs are
    kept in `out` as tmp-<prefix><model>-*.log."""
    found = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}") as tmp:
        for model in resolve(models.split(","), log):
            m0 = time.perf_counter()
            try:
                found.append(bench(model, Path(tmp)))
            finally:
                for f in Path(tmp).glob("*.log"):
                    (out / f"tmp-{prefix}{model.name}-{f.name}").write_bytes(f.read_bytes())
                    f.unlink()
            log(f"{model.name}: done in {time.perf_counter() - m0:.0f} s")
    return found


def publish(
    results: dict[str, Any],
    stem: Path,
    table: Callable[[dict[str, Any]], str],
    draw: Callable[[dict[str, Any], Path], None],
) -> None:
    """The JSON, the table on stdout and, with matplotlib, the plot."""
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(table(results))
    try:
        draw(results, stem.with_suffix(".png"))
    except ImportError:  # matplotlib comes with the bench extra
        log("no plot: matplotlib is not installed (GATEWAY_EXTRAS=test,bench)")
    log(f"wrote {stem}.json in {results['seconds']} s")


def run_anchor(opts: argparse.Namespace) -> None:
    """The gateway against llama-server (bench/anchor.py), 1 decode thread each."""
    models = opts.models or ("smollm2" if opts.quick else "bloomz,smollm2")
    levels = [int(x) for x in (opts.levels or ("1,8" if opts.quick else "1,2,4,8,16")).split(",")]
    repeat = opts.repeat or (1 if opts.quick else 2)
    threads = 1 if opts.threads == 2 else opts.threads  # the anchor runs use 1 by default
    started = datetime.datetime.now().isoformat(timespec="seconds")
    out = results_dir(opts.quick)
    results: dict[str, Any] = {
        "started": started,
        "load_average_at_start": load_average(),
        "quick": opts.quick,
        "threads": threads,
        "repeat": repeat,
        "slots": anchor.SLOTS,
        "slot_ctx": anchor.SLOT_CTX,
        "max_tokens": anchor.MAX_TOKENS,
        "models": [],
    }
    t0 = time.perf_counter()
    results["models"] = per_model(
        models,
        "anchor-",
        out,
        lambda model, tmp: anchor.run_model(
            model, tmp, levels, repeat, threads, opts.quick, opts.unified, log
        ),
    )
    results["seconds"] = round(time.perf_counter() - t0, 1)
    name = opts.out or ("anchor-quick" if opts.quick else f"anchor-{started.replace(':', '')}")
    publish(results, out / name, anchor.markdown, anchor.plot)


if __name__ == "__main__":
    main()

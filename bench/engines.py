"""The same SmolLM2-135M-Instruct weights on llama.cpp and on ctransformers, same run:
config/ab-llama-cpp-vs-ctransformers.toml served as shipped (the converted file made by
`gateway convert-for-ctransformers` into a temporary folder), 24 prompts at temperature
0 sent to each engine in turn through the route's override header (alternating which
goes first), streamed. Reports how often the two greedy outputs agree (identical, same
first tokens) and each engine's decode tokens/s and time to first token (medians).
Writes JSON to bench/results/ (quick runs: bench/results/quick/).

    .venv/bin/python -m bench.engines --quick    # under a minute: 16 tokens each
    .venv/bin/python -m bench.engines            # 64 tokens each, a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.concurrency_check import CHECK_PROMPTS
from bench.load import RequestRecord, stream_one
from bench.models import smollm2
from bench.paths import results_dir
from bench.servers import ROOT, ServerProcess, free_port

CONFIG = ROOT / "config" / "ab-llama-cpp-vs-ctransformers.toml"
CONVERTED = "models/smollm2-135m-instruct-ctransformers.gguf"  # as the config expects
ENGINES = ("llama_cpp", "ctransformers")
PREFIX_CHARS = 20  # "same start": the first characters of both outputs agree


def log(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


def prepare(workdir: Path) -> Path:
    """The converted file and the config, laid out as in the repository."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "convert-for-ctransformers",
            str(smollm2().path),
            str(workdir / CONVERTED),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"conversion failed: {done.stderr}")
    (workdir / "config").mkdir()
    config = workdir / "config" / CONFIG.name
    config.write_text(CONFIG.read_text())
    return config


async def one(
    client: httpx.AsyncClient, url: str, engine: str, prompt: str, n: int
) -> RequestRecord:
    body = {
        "model": "smol-engines",
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    client.headers["x-gateway-variant"] = engine
    rec = await stream_one(client, url, body, 0.0)
    if rec.error:
        raise SystemExit(f"{engine}: {rec.error}")
    return rec


async def run(base_url: str, n_tokens: int) -> dict[str, list[RequestRecord]]:
    out: dict[str, list[RequestRecord]] = {e: [] for e in ENGINES}
    url = f"{base_url}/v1/completions"
    async with httpx.AsyncClient(timeout=300) as client:
        for engine in ENGINES:  # warm both once (first-call costs are not the engine's)
            await one(client, url, engine, "Hello", 2)
        for i, prompt in enumerate(CHECK_PROMPTS):
            order = ENGINES if i % 2 == 0 else tuple(reversed(ENGINES))
            for engine in order:
                out[engine].append(await one(client, url, engine, prompt, n_tokens))
    return out


def decode_rate(rec: RequestRecord) -> float | None:
    """Tokens/s after the first: the engine's decode speed, without prompt processing."""
    if rec.tokens < 2 or len(rec.stamps) < 2 or rec.stamps[-1] <= rec.stamps[0]:
        return None
    return (rec.tokens - 1) / (rec.stamps[-1] - rec.stamps[0])


def summarise(records: dict[str, list[RequestRecord]]) -> dict[str, Any]:
    a, b = records["llama_cpp"], records["ctransformers"]
    identical = sum(x.text == y.text for x, y in zip(a, b, strict=True))
    same_start = sum(
        x.text[:PREFIX_CHARS] == y.text[:PREFIX_CHARS] for x, y in zip(a, b, strict=True)
    )
    common = [len(_common_prefix(x.text, y.text)) for x, y in zip(a, b, strict=True)]
    summary: dict[str, Any] = {
        "prompts": len(a),
        "identical_outputs": identical,
        f"same_first_{PREFIX_CHARS}_chars": same_start,
        "common_prefix_chars_median": statistics.median(common),
        "output_chars_median": statistics.median(len(x.text) for x in a),
    }
    for engine, recs in records.items():
        rates = [r for r in (decode_rate(x) for x in recs) if r is not None]
        summary[engine] = {
            "decode_tokens_per_s_median": round(statistics.median(rates), 1),
            "ttft_ms_median": round(statistics.median(x.stamps[0] for x in recs) * 1000, 1),
            "completion_tokens": sum(x.tokens for x in recs),
        }
    summary["ctransformers_over_llama_cpp_decode"] = round(
        summary["ctransformers"]["decode_tokens_per_s_median"]
        / summary["llama_cpp"]["decode_tokens_per_s_median"],
        3,
    )
    summary["examples"] = [
        {"prompt": p, "llama_cpp": x.text, "ctransformers": y.text}
        for p, x, y in list(zip(CHECK_PROMPTS, a, b, strict=True))[:3]
    ]
    return summary


def _common_prefix(x: str, y: str) -> str:
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return x[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args(argv)
    n_tokens = 16 if args.quick else 64
    workdir = Path(tempfile.mkdtemp(prefix="engines-"))
    log("converting SmolLM2 for ctransformers")
    config = prepare(workdir)
    port = free_port()
    argv_ = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with ServerProcess("gateway", argv_, port, "/ready", workdir / "gateway.log") as server:
        log(f"{len(CHECK_PROMPTS)} prompts x {n_tokens} tokens on each engine")
        records = asyncio.run(run(server.base_url, n_tokens))
    summary = {"quick": args.quick, "max_tokens": n_tokens, **summarise(records)}
    path = results_dir(args.quick) / "engines.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "examples"}, indent=2))
    log(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

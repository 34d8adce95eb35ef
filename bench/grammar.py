"""What a grammar costs on the embedded model (SmolLM2), same run, in process:

- a grammar-constrained sequence's decode tokens/s vs an unconstrained one, each alone
  (target: the constrained one costs at most 1.5x);
- an unconstrained sequence's decode tokens/s beside an unconstrained neighbour vs
  beside a constrained one, in the same batches (target: at most 5 % slower).

Rounds alternate the order of the variants; the medians are reported. Decode rate is
(tokens - 1) / (time from the first token to the last), so prefill is left out. Writes
JSON to bench/results/ (quick runs: bench/results/quick/).

    .venv/bin/python -m bench.grammar --quick    # under a minute
    .venv/bin/python -m bench.grammar            # longer sequences, more rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from backends.base import (
    ChatMessage,
    Finished,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TextDelta,
)
from backends.llama_cpp import LlamaCppBackend
from bench.models import smollm2
from bench.paths import results_dir

# Open-ended on purpose: an array of free strings can go on for as long as asked.
SCHEMA = {"type": "array", "items": {"type": "string"}}
PROMPT = "List many English words as a JSON array of strings."


def log(message: str) -> None:
    print(f"[grammar] {message}", file=sys.stderr, flush=True)


def request(tokens: int, constrained: bool, eos: int) -> GenerationRequest:
    # The end token is banned so that every sequence runs its full length.
    params = SamplingParams(max_tokens=tokens, temperature=0, logit_bias={eos: -100})
    return GenerationRequest(
        messages=(ChatMessage("user", PROMPT),),
        params=params,
        constraint=OutputConstraint("json_schema", SCHEMA) if constrained else None,
    )


async def token_times(backend: LlamaCppBackend, req: GenerationRequest) -> list[float]:
    """When each generated token's text arrived."""
    times = []
    async for event in backend.generate(req):
        if isinstance(event, TextDelta):
            times.extend([time.perf_counter()] * max(1, len(event.token_ids)))
        elif isinstance(event, Finished):
            break
    return times


def rate(times: list[float], until: float = float("inf")) -> float:
    kept = [t for t in times if t <= until]
    if len(kept) < 3 or kept[-1] <= kept[0]:
        return float("nan")
    return (len(kept) - 1) / (kept[-1] - kept[0])


async def decode_rate(backend: LlamaCppBackend, req: GenerationRequest) -> float:
    return rate(await token_times(backend, req))


async def beside(
    backend: LlamaCppBackend, plain: GenerationRequest, other: GenerationRequest
) -> float:
    """The plain sequence's rate while the other one still ran (a constrained answer
    may complete before its max_tokens)."""
    mine, theirs = await asyncio.gather(token_times(backend, plain), token_times(backend, other))
    return rate(mine, until=theirs[-1] if theirs else float("inf"))


async def measure(path: Path, tokens: int, rounds: int) -> dict[str, Any]:
    options = {"model_path": str(path), "n_ctx": 2048, "parallel": 2, "threads": 1}
    async with LlamaCppBackend.from_config("smollm2", options, Path(".")) as backend:
        eos = backend._model.eos if backend._model is not None else 0
        rates: dict[str, list[float]] = {
            k: [] for k in ("solo_plain", "solo_grammar", "beside_plain", "beside_grammar")
        }
        await decode_rate(backend, request(8, True, eos))  # warm-up, grammar cached
        for r in range(rounds):
            for constrained in (r % 2 == 0, r % 2 == 1):
                key = "solo_grammar" if constrained else "solo_plain"
                rates[key].append(await decode_rate(backend, request(tokens, constrained, eos)))
            for constrained in (r % 2 == 1, r % 2 == 0):
                plain = await beside(
                    backend, request(tokens, False, eos), request(tokens, constrained, eos)
                )
                rates["beside_grammar" if constrained else "beside_plain"].append(plain)
            log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
            )
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "tokens": tokens,
        "rounds": rounds,
        "median_tokens_per_s": med,
        "grammar_cost": med["solo_plain"] / med["solo_grammar"],
        "neighbour_slowdown": 1 - med["beside_grammar"] / med["beside_plain"],
        "targets": {"grammar_cost_max": 1.5, "neighbour_slowdown_max": 0.05},
        "rates": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under a minute)")
    args = parser.parse_args()
    tokens, rounds = (32, 3) if args.quick else (128, 7)
    result = asyncio.run(measure(smollm2().path, tokens, rounds))
    out = results_dir(args.quick) / "grammar.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"grammar cost {result['grammar_cost']:.2f}x (target <= 1.5x), neighbour slowdown "
        f"{result['neighbour_slowdown'] * 100:.1f} % (target <= 5 %); wrote {out.name}"
    )


if __name__ == "__main__":
    main()

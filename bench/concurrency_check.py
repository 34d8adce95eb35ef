"""Correctness under concurrency: 24 SmolLM2 prompts at temperature 0, run alone and
then 8 at a time through the gateway; the outputs should match in at least 95 % of
cases (a late token may flip between batch shapes), and no request's text may show up
in another's.

    .venv/bin/python -m bench.concurrency_check [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench import servers
from bench.load import RequestRecord, completion_body, stream_one
from bench.models import smollm2
from bench.prompts import PROMPTS

EXTRA_PROMPTS = (
    "The capital of France is Paris, and the capital of Japan is",
    "Water boils at one hundred degrees Celsius at sea level, but on a high mountain",
    "Translate to English: Je t'aime.",
    "The quick brown fox jumps over the lazy dog. This sentence is famous because",
    "import numpy as np\n\ndef moving_average(values, window):\n",
    "My favourite season is autumn, because",
    "The three laws of motion, formulated by Isaac Newton, state that",
    "Chess is a board game for two players in which",
    "Recipe for pancakes:\nIngredients:\n-",
    "The James Webb Space Telescope was launched in",
    "SELECT name, email FROM users WHERE",
    "Volcanoes form when",
)
CHECK_PROMPTS = (*PROMPTS, *EXTRA_PROMPTS)
WINDOW = 24  # characters: a shared run this long means text leaked between requests


async def run_all(base_url: str, concurrency: int) -> list[RequestRecord]:
    url = f"{base_url}/v1/completions"
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(prompt: str) -> RequestRecord:
            async with gate:
                return await stream_one(client, url, completion_body("bench", prompt, True), 0.0)

        return list(await asyncio.gather(*(one(p) for p in CHECK_PROMPTS)))


def leaked(text: str, own_solo: str, other_solo: str) -> bool:
    for start in range(0, max(0, len(other_solo) - WINDOW + 1), 4):
        window = other_solo[start : start + WINDOW]
        if window in text and window not in own_solo:
            return True
    return False


def compare(solo: list[RequestRecord], batched: list[RequestRecord]) -> dict[str, Any]:
    first_diffs: list[int] = []
    leaks: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(zip(solo, batched, strict=True)):
        if a.chunks != b.chunks:
            # Index of the first differing chunk: one chunk per token here.
            first_diffs.append(
                next(
                    (k for k, (x, y) in enumerate(zip(a.chunks, b.chunks, strict=False)) if x != y),
                    min(len(a.chunks), len(b.chunks)),
                )
            )
        leaks += [
            (i, j) for j, other in enumerate(solo) if j != i and leaked(b.text, a.text, other.text)
        ]
    n = len(solo)
    return {
        "prompts": n,
        "concurrency": 8,
        "identical": n - len(first_diffs),
        "identical_share": round((n - len(first_diffs)) / n, 3),
        "first_difference_at_token": sorted(first_diffs),
        "cross_request_leaks": leaks,
        "errors": sum(r.error is not None for r in (*solo, *batched)),
        "met": (n - len(first_diffs)) / n >= 0.95 and not leaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    model = smollm2()
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        servers.gateway(model.path, Path(tmp), 8, opts.threads) as gw,
    ):
        solo = asyncio.run(run_all(gw.base_url, 1))
        batched = asyncio.run(run_all(gw.base_url, 8))
    result = compare(solo, batched)
    json.dump(result, sys.stdout, indent=1)
    print()
    if not result["met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

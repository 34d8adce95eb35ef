"""The engine reports, per sequence of a call, how long it waited for a slot (the
gateway's `gateway_queue_wait_seconds`): with one slot, the second sequence of a call
is taken up only once the first has finished."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from backends.base import GenerationRequest, SamplingParams
from backends.llama_cpp import LlamaCppBackend


def test_each_sequence_s_wait_for_a_slot_is_known(tiny_bloom_path: Path) -> None:
    async def main() -> None:
        options = {"model_path": str(tiny_bloom_path), "parallel": 1, "n_ctx": 256}
        async with LlamaCppBackend.from_config("m", options, Path(".")) as backend:
            admission = backend.admit(2)
            params = SamplingParams(max_tokens=8, temperature=0)
            gens = [admission.generate(GenerationRequest(p, params)) for p in ("a", "b")]
            assert admission.queue_seconds() == [None, None]  # nothing submitted yet
            first = [event async for event in gens[0]]
            assert first and admission.queue_seconds()[0] is not None
            second = [event async for event in gens[1]]
            admission.release()
            waits = admission.queue_seconds()
            assert second and None not in waits
            # one slot: the second sequence was submitted when it was first iterated,
            # after the first had finished, so both were taken up at once
            assert all(w is not None and w >= 0 for w in waits)

    asyncio.run(main())


def test_a_queued_sequence_waits_for_the_running_one(tiny_bloom_path: Path) -> None:
    async def main() -> None:
        options = {"model_path": str(tiny_bloom_path), "parallel": 1, "n_ctx": 256}
        async with LlamaCppBackend.from_config("m", options, Path(".")) as backend:
            admission = backend.admit(2)
            params = SamplingParams(max_tokens=200, temperature=0, logit_bias={2: -100})
            gens = [admission.generate(GenerationRequest(p, params)) for p in ("a", "b")]
            await anext(gens[0])  # the first holds the only slot for 200 tokens
            started = time.perf_counter()
            await anext(gens[1])  # the second waits in the queue until it is done
            waited = time.perf_counter() - started
            admission.release()
            running, queued = admission.queue_seconds()
            assert running is not None and queued is not None
            assert running < queued <= waited
            for gen in gens:
                await gen.aclose()

    asyncio.run(main())

"""The llama_cpp backend and its batching engine, in process, on real GGUF files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from backends.base import Finished, GenerationRequest, SamplingParams, TextDelta
from backends.errors import ConfigError, ContextLengthExceeded, InvalidRequest, Overloaded
from backends.llama_cpp import LlamaCppBackend

PROMPTS = [
    "The capital of France is",
    "def add(a, b):",
    "Once upon a time",
    "The best way to learn",
    "1, 2, 3,",
    "Dear Sir,",
    "import numpy",
    "Roses are red",
]


async def run(
    backend: LlamaCppBackend, prompt: str | tuple[int, ...], **params: object
) -> tuple[str, Finished]:
    text = []
    finished = None
    async for event in backend.generate(GenerationRequest(prompt, SamplingParams(**params))):
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            finished = event
    assert finished is not None
    return "".join(text), finished


def backend_for(path: Path, **options: object) -> LlamaCppBackend:
    return LlamaCppBackend.from_config("m", {"model_path": str(path), **options}, Path("."))


async def wait_idle(backend: LlamaCppBackend, timeout: float = 60) -> None:
    """Poll the engine's stats until nothing runs or waits; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while (stats := backend.stats())["busy"] or stats["queued"]:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("model", ["smollm2", "tiny_bloom"])
def test_concurrent_greedy_outputs_match_solo_outputs(
    model: str, smollm2_path: Path, tiny_bloom_path: Path
) -> None:
    path = smollm2_path if model == "smollm2" else tiny_bloom_path

    async def main() -> None:
        backend = backend_for(path, parallel=4, n_ctx=256)
        async with backend:
            solo = [await run(backend, p, max_tokens=16, temperature=0) for p in PROMPTS]
            together = await asyncio.gather(
                *(run(backend, p, max_tokens=16, temperature=0) for p in PROMPTS)
            )
            stats = backend.stats()
        # Each sequence has its own KV stream, so batching changes nothing: identical.
        assert [t for t, _ in together] == [t for t, _ in solo]
        for text, finished in together:
            assert finished.usage.completion_tokens == 16 and finished.finish_reason == "length"
            assert text
        assert stats["steps"] > 0

    asyncio.run(main())


def test_one_at_a_time_decoding_keeps_outputs_identical(smollm2_path: Path) -> None:
    """When the engine has measured single tokens as cheaper than the batch, it decodes
    the running sequences one at a time: the same text, token for token."""

    async def main() -> None:
        backend = backend_for(smollm2_path, parallel=4, n_ctx=256)
        async with backend:
            solo = [await run(backend, p, max_tokens=12, temperature=0) for p in PROMPTS[:4]]
            engine = backend._engine
            assert engine is not None
            for size in range(2, 5):  # as if batches of 2-4 had cost 50x a single token
                engine.costs.record(size, 50 * (engine.costs.estimate(1) or 0.01))
            before = backend.stats()
            together = await asyncio.gather(
                *(run(backend, p, max_tokens=12, temperature=0) for p in PROMPTS[:4])
            )
            after = backend.stats()
        assert [t for t, _ in together] == [t for t, _ in solo]
        steps = after["steps"] - before["steps"]
        passes = after["micro_batches"] - before["micro_batches"]
        assert passes > steps + 10  # most decode-only steps went one sequence at a time

    asyncio.run(main())


def test_deterministic_false_uses_one_unified_kv_cache(tiny_bloom_path: Path) -> None:
    async def main() -> None:
        backend = backend_for(tiny_bloom_path, parallel=2, n_ctx=128, deterministic=False)
        async with backend:
            assert backend._ctx is not None and backend._ctx.kv_unified
            assert backend.info().details["deterministic"] is False
            results = await asyncio.gather(*(run(backend, p, max_tokens=4) for p in PROMPTS[:2]))
        assert all(f.usage.completion_tokens == 4 for _, f in results)
        async with backend_for(tiny_bloom_path, parallel=2, n_ctx=128) as default:
            assert default._ctx is not None and not default._ctx.kv_unified
            assert default.info().details["deterministic"] is True

    asyncio.run(main())


@pytest.mark.parametrize("value", ["yes", 1, "false"])
def test_deterministic_must_be_a_boolean(tiny_bloom_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="deterministic must be true or false") as err:
        backend_for(tiny_bloom_path, deterministic=value)
    assert err.value.key == "deterministic"


def test_prefix_reuse_keeps_outputs_identical(smollm2_path: Path) -> None:
    prefix = "def function_number_one(x):\n    return x * 2\n\n" * 8

    async def main() -> None:
        async with backend_for(smollm2_path, parallel=2, n_ctx=512) as backend:
            first = await run(backend, prefix + "def g(", max_tokens=8, temperature=0)
            reused_before = backend.stats()["prefix_reused_tokens"]
            second = await run(backend, prefix + "def g(", max_tokens=8, temperature=0)
            third = await run(backend, prefix + "class K", max_tokens=8, temperature=0)
            reused = backend.stats()["prefix_reused_tokens"] - reused_before
        async with backend_for(smollm2_path, parallel=2, n_ctx=512) as fresh:
            third_fresh = await run(fresh, prefix + "class K", max_tokens=8, temperature=0)
        assert first[0] == second[0]
        assert third[0] == third_fresh[0]
        assert reused > 100  # both later requests reused the shared prefix's KV

    asyncio.run(main())


def test_queue_full_is_overloaded(tiny_bloom_path: Path) -> None:
    async def main() -> None:
        async with backend_for(tiny_bloom_path, parallel=1, max_queue=0, n_ctx=256) as backend:
            params = SamplingParams(max_tokens=200, temperature=0, logit_bias={2: -100})
            gen = backend.generate(GenerationRequest("hello", params))
            await anext(gen)
            with pytest.raises(Overloaded):
                await run(backend, "again", max_tokens=2)
            await gen.aclose()
            await wait_idle(backend)  # the cancelled sequence leaves at the next step
            assert (await run(backend, "again", max_tokens=2))[1].usage.completion_tokens == 2

    asyncio.run(main())


def test_context_and_token_checks(tiny_bloom_path: Path) -> None:
    async def main() -> None:
        async with backend_for(tiny_bloom_path, parallel=1, n_ctx=64) as backend:
            with pytest.raises(ContextLengthExceeded) as err:
                await run(backend, "word " * 100, max_tokens=4)
            assert "64" in str(err.value)
            with pytest.raises(InvalidRequest):
                await run(backend, (1, 2, 10**7), max_tokens=2)
            _, finished = await run(backend, (5, 6, 7), max_tokens=3)
            assert finished.usage.prompt_tokens == 3
            _, finished = await run(
                backend, "hi", max_tokens=None, temperature=0, logit_bias={2: -100}
            )
            assert finished.finish_reason == "length"
            assert finished.usage.prompt_tokens + finished.usage.completion_tokens == 64

    asyncio.run(main())


def test_long_prompt_is_prefilled_in_chunks_without_stalling_streams(smollm2_path: Path) -> None:
    """While a long prompt is prefilled, a running stream keeps getting a token every
    step: between the long request's submission and its first token (its whole
    prefill, in chunks of n_batch - 1 tokens), the stream receives about one token per
    chunk. Counted in events, in the engine's own order, so a busy machine changes
    nothing (the engine hands every event to the event loop in the order it made them)."""
    n_batch = 32

    async def main() -> None:
        async with backend_for(smollm2_path, parallel=2, n_ctx=2048, n_batch=n_batch) as backend:
            params = SamplingParams(max_tokens=300, temperature=0, logit_bias={0: -100, 2: -100})
            streamed = 0
            five = asyncio.Event()

            async def running() -> None:
                nonlocal streamed
                async for event in backend.generate(GenerationRequest("1, 2, 3,", params)):
                    if isinstance(event, TextDelta):
                        streamed += 1
                        if streamed == 5:
                            five.set()

            stream = asyncio.create_task(running())
            await asyncio.wait_for(five.wait(), 60)
            long_prompt = "def function(x):\n    return x + 1\n" * 60  # ~800 tokens
            gen = backend.generate(GenerationRequest(long_prompt, SamplingParams(max_tokens=1)))
            before = streamed
            await anext(gen)  # the long prompt's first event: its prefill is done
            during = streamed - before
            finished = [e async for e in gen][-1]
            assert isinstance(finished, Finished)
            await stream
            chunks = -(-finished.usage.prompt_tokens // (n_batch - 1))
            assert chunks >= 20  # the prompt was long enough to need many chunks
            assert during >= chunks - 2, (during, chunks)  # the stream kept flowing

    asyncio.run(main())

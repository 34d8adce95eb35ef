"""The llama_cpp backend's core behaviour through the `Backend` contract, in the
gateway's process and in a worker process (`isolation = "process"`): the same greedy
text, streamed event by event, log-probs, tokenizer calls, admission, errors raised
before the first event, and cancellation that reaches the engine."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends.base import Backend, Finished, GenerationRequest, SamplingParams, TextDelta
from backends.errors import BackendError, ContextLengthExceeded, Overloaded
from backends.llama_cpp import LlamaCppBackend
from backends.worker import ProcessBackend

ISOLATIONS = ["none", "process"]


def build(isolation: str, path: Path, **options: Any) -> Backend:
    options = {"model_path": str(path), "threads": 1, **options}
    if isolation == "none":
        return LlamaCppBackend.from_config("m", options, Path("."))
    spec = {"backend": "llama_cpp", "options": options, "worker": {"heartbeat_timeout": 5}}
    return ProcessBackend.from_config("m", spec, Path("."))


async def collect(events: AsyncIterator[Any]) -> tuple[list[TextDelta], Finished]:
    deltas: list[TextDelta] = []
    async for event in events:
        if isinstance(event, Finished):
            return deltas, event
        deltas.append(event)
    raise AssertionError("no Finished event")


def greedy(prompt: str, max_tokens: int = 12, **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_tokens=max_tokens, temperature=0), **kw)


async def stats_when(backend: Backend, ready: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ready(stats := dict(backend.stats())):
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.02)
    return stats


async def core(isolation: str, path: Path) -> dict[str, Any]:
    async with build(isolation, path, n_ctx=512, parallel=2) as backend:
        out: dict[str, Any] = {}
        deltas, finished = await collect(backend.generate(greedy("Once upon a time")))
        out["text"] = "".join(d.text for d in deltas)
        out["usage"] = finished.usage
        assert len(deltas) > 1  # streamed token by token, not in one piece
        deltas, _ = await collect(backend.generate(greedy("The capital of France is", logprobs=2)))
        out["logprobs"] = [
            (lp.token, round(lp.logprob or 0, 4)) for d in deltas for lp in d.logprobs
        ]
        assert out["logprobs"] and all(len(lp.top) == 2 for d in deltas for lp in d.logprobs)
        ids = await backend.tokenize("Hello world", add_special=False)
        assert await backend.detokenize(ids) == "Hello world"
        out["ids"] = ids
        with pytest.raises(ContextLengthExceeded):
            await collect(backend.generate(greedy("hi " * 600)))
        with pytest.raises(Overloaded):
            await collect(backend.admit(1000).generate(greedy("x")))
        admission = backend.admit(2)
        both = await asyncio.gather(
            *(collect(admission.generate(greedy(p))) for p in ("One", "Two three"))
        )
        admission.release()
        assert admission.prompt_tokens() == [f.usage.prompt_tokens for _, f in both]
        # nothing stays reserved: a full admission fits again, and plain calls too
        for _ in range(3):
            await collect(backend.generate(greedy("again", max_tokens=2)))
        full = backend.admit(2)
        await collect(full.generate(greedy("again", max_tokens=2)))
        full.release()
        await stats_when(backend, lambda s: s.get("reserved") == 0 and s.get("busy") == 0)
        out["capabilities"] = backend.capabilities
        assert backend.info().details["n_ctx"] == 512
        return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2", "tiny_bloom"])
def test_the_same_results_in_process_and_in_a_worker(
    model: str, smollm2_path: Path, tiny_bloom_path: Path
) -> None:
    path = smollm2_path if model == "smollm2" else tiny_bloom_path
    results = {isolation: asyncio.run(core(isolation, path)) for isolation in ISOLATIONS}
    assert results["none"] == results["process"]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_closing_a_stream_stops_its_generation(isolation: str, smollm2_path: Path) -> None:
    async def main() -> None:
        async with build(isolation, smollm2_path, n_ctx=2048, parallel=1) as backend:
            events = backend.generate(greedy("Once upon a time", max_tokens=1900))
            await anext(events)
            await stats_when(backend, lambda s: s.get("busy") == 1)
            await events.aclose()  # type: ignore[attr-defined]
            stats = await stats_when(backend, lambda s: s.get("busy") == 0)
            assert stats["steps"] < 1000, stats  # stopped, not run to its 1900 tokens

    asyncio.run(main())


def test_a_load_error_in_the_worker_is_the_same_clean_error(
    tiny_bloom_path: Path, tmp_path: Path
) -> None:
    """llama.cpp refuses the file inside the worker: load() raises what it said (the
    file's name, not its folder), as in-process, and the worker is gone."""
    from tests.backends.llama_cpp.test_model_file_checks import corrupt

    bad = corrupt(tiny_bloom_path, tmp_path / "arch.gguf", "architecture")
    backend = build("process", bad)
    assert isinstance(backend, ProcessBackend)

    async def main() -> None:
        with pytest.raises(BackendError) as caught:
            await backend.load()
        assert "unknown model architecture: 'bl00m'" in str(caught.value)
        assert str(tmp_path) not in str(caught.value)
        status = backend.worker_status()
        assert status["state"] == "failed" and status["pid"] is None
        await backend.aclose()

    asyncio.run(main())


def test_a_failed_reload_keeps_restarting_and_says_why_without_paths(
    tiny_bloom_path: Path, tmp_path: Path
) -> None:
    model = tmp_path / "secret-folder" / "m.gguf"
    model.parent.mkdir()
    model.write_bytes(tiny_bloom_path.read_bytes())
    spec = {
        "backend": "llama_cpp",
        "options": {"model_path": str(model), "n_ctx": 128},
        "worker": {"restart_backoff_initial": 0.1, "restart_backoff_max": 0.2},
    }
    backend = ProcessBackend.from_config("m", spec, tmp_path)

    async def until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, f"{what}: {backend.worker_status()}"
            await asyncio.sleep(0.02)

    async def main() -> None:
        async with backend:
            pid = backend.worker_status()["pid"]
            hidden = model.with_suffix(".moved")
            model.rename(hidden)
            os.kill(pid, signal.SIGKILL)
            await until(lambda: "reload failed" in (backend.reason or ""), "a failed reload")
            health = backend.health()
            assert health.state == "unavailable" and "secret-folder" not in (health.reason or "")
            with pytest.raises(Exception) as caught:
                await collect(backend.generate(greedy("x")))
            assert "secret-folder" not in str(caught.value)
            hidden.rename(model)
            await until(lambda: backend.worker_status()["state"] == "ready", "the model's return")
            _, finished = await collect(backend.generate(greedy("x", max_tokens=3)))
            assert finished.usage.completion_tokens == 3

    asyncio.run(main())

"""What a worker process (`isolation = "process"`) adds on the hot path, per event and
per request, without any engine in the way: a backend that yields N one-token deltas at
once, called in the gateway's process and through `ProcessBackend`, best of 3 rounds.

    .venv/bin/python -m bench.worker_overhead        # a few seconds

The backend is written to a temporary folder as an installed plugin (an entry point in a
`.dist-info`), as the worker finds every backend by name."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

from backends.base import Backend, GenerationRequest, SamplingParams
from backends.worker import ProcessBackend

PLUGIN = """
from backends.base import Backend, Capabilities, Finished, ModelInfo, TextDelta, Usage


class Instant(Backend):
    name = "instant"

    @classmethod
    def from_config(cls, model_id, options, base_dir):
        return cls()

    async def load(self):
        pass

    @property
    def capabilities(self):
        return Capabilities()

    def info(self):
        return ModelInfo("m", self.name, self.capabilities, {})

    async def generate(self, request):
        for i in range(request.params.max_tokens):
            yield TextDelta("tok", (i,))
        yield Finished("length", Usage(1, request.params.max_tokens))

    async def aclose(self):
        pass
"""


def install(folder: Path) -> None:
    (folder / "instant_backend.py").write_text(PLUGIN)
    meta = folder / "instant_backend-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: instant-backend\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text(
        "[gateway.backends]\ninstant = instant_backend:Instant\n"
    )


async def timed(backend: Backend, tokens: int) -> tuple[float, float]:
    """(seconds to the first event, seconds to the end)."""
    start = time.perf_counter()
    first = None
    request = GenerationRequest("x", SamplingParams(max_tokens=tokens))
    async for _ in backend.generate(request):
        first = first or time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


async def measure(backend: Backend) -> tuple[float, float]:
    await backend.load()
    try:
        await timed(backend, 100)
        per_event = min([(await timed(backend, 20000))[1] for _ in range(3)]) / 20000
        first = min([(await timed(backend, 1))[0] for _ in range(200)])
        return per_event, first
    finally:
        await backend.aclose()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        install(Path(tmp))
        sys.path.insert(0, tmp)  # this process; the worker inherits PYTHONPATH below
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [tmp, os.environ.get("PYTHONPATH")])
        )
        instant = importlib.import_module("instant_backend").Instant
        rows = {
            "in process": asyncio.run(measure(instant())),
            "worker process": asyncio.run(
                measure(ProcessBackend.from_config("m", {"backend": "instant"}, Path(tmp)))
            ),
        }
    print("| where | per event (µs) | first event, best (µs) |\n|---|---:|---:|")
    for name, (per_event, first) in rows.items():
        print(f"| {name} | {per_event * 1e6:.1f} | {first * 1e6:.0f} |")


if __name__ == "__main__":
    main()

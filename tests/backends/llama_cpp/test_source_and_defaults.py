"""Starting on a machine without the hub, and defaults that suit a shared machine.

- A model from the Hugging Face hub that is not cached, with the hub unreachable: the
  gateway exits with status 2 within seconds and one line saying what to do, instead
  of ~25 s of the hub client's retries, each logged twice. The hub here is a closed
  loopback port (never the real hub) and HF_HOME an empty folder.
- The same model once cached starts with no network at all.
- `threads` defaults to the cores minus one: ggml's threads wait for each other at
  spinning barriers, so one preempted thread stalls them all on a busy machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.llama_cpp.options import parse_options
from tests.support.server import free_port, model_config

REPO = Path(__file__).resolve().parents[3]
HUB_MODEL = {"hf_repo": "QuantFactory/bloomz-560m-GGUF", "hf_file": "bloomz-560m.Q8_0.gguf"}


def gateway(args: list[str], config: Path, hf_home: Path) -> tuple[int, str, float]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_HOME": str(hf_home),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "GATEWAY_LOG_FORMAT": "json",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def test_offline_and_not_cached_fails_fast_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("bloomz", HUB_MODEL))
    port = str(free_port())
    status, output, seconds = gateway(["serve", "--port", port], config, tmp_path / "hf")
    assert status == 2, output
    assert seconds < 5, f"took {seconds:.1f} s"
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "options.hf_repo" in lines[0] and "is not in the local cache" in lines[0]
    assert "set model_path to a local GGUF file" in lines[0]
    assert "Retrying" not in output


def test_a_cached_hub_model_needs_no_network(tiny_bloom_path: Path, tmp_path: Path) -> None:
    """The standard cache layout, as huggingface_hub writes it."""
    repo = tmp_path / "hf" / "hub" / "models--QuantFactory--bloomz-560m-GGUF"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_bloom_path, snapshot / HUB_MODEL["hf_file"])
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("bloomz", HUB_MODEL))
    status, output, seconds = gateway(["check"], config, tmp_path / "hf")
    assert status == 0, output
    assert "bloomz: backend llama_cpp, ok" in output
    assert seconds < 5, f"took {seconds:.1f} s"


def test_threads_default_leaves_a_core_free(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = parse_options({"model_path": "m.gguf"}, Path("."))
    cores = len(os.sched_getaffinity(0))
    assert opts.effective_threads == max(1, cores - 1)
    for available, expected in ((1, 1), (2, 1), (8, 7)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=available: set(range(n)))
        assert opts.effective_threads == expected
    explicit = parse_options({"model_path": "m.gguf", "threads": 3}, Path("."))
    assert explicit.effective_threads == 3

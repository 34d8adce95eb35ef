"""`gateway convert-for-ctransformers` on the embedded SmolLM2: the command runs as a
real subprocess, and the converted file is served by ctransformers in a gateway
subprocess (never in the pytest process: ctransformers can crash the process)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.ctransformers.convert import convert_merge
from tests.support.ggufgen import write_bloom
from tests.support.server import GatewayProcess


def run_convert(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "convert-for-ctransformers", str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    target = tmp_path_factory.mktemp("convert") / "smollm2-ctransformers.gguf"
    done = run_convert(smollm2_path, target)
    assert done.returncode == 0, done.stderr
    assert "merges kept" in done.stdout
    return target


@pytest.fixture(scope="module")
def gateway(converted: Path) -> Iterator[GatewayProcess]:
    folder = converted.parent
    config = folder / "gateway.toml"
    config.write_text(
        f"""
[[models]]
id = "smollm2-ct"
backend = "ctransformers"
[models.options]
model_path = "{converted}"
model_type = "llama"
context_length = 512
"""
    )
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def test_the_converted_smollm2_runs_coherently_on_ctransformers(gateway: GatewayProcess) -> None:
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        json={
            "model": "smollm2-ct",
            "prompt": "The capital of France is",
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert "Paris" in r.json()["choices"][0]["text"]


def test_the_converted_file_tokenizes_words_with_their_spaces(gateway: GatewayProcess) -> None:
    # merges over "Ġ" kept: " capital" is one token, as in llama.cpp, not " " + "capital"
    r = httpx.post(
        f"{gateway.base_url}/tokenize",
        json={"model": "smollm2-ct", "content": "The capital of France is", "with_pieces": True},
        timeout=30,
    )
    pieces = [t["piece"] for t in r.json()["tokens"]]
    assert pieces == ["The", " capital", " of", " France", " is"]


def test_the_file_header_says_version_2_and_has_output_weight(converted: Path) -> None:
    from backends.llama_cpp.gguf_check import read_gguf

    summary = read_gguf(converted)
    assert summary.version == 2
    assert any(t.name == "output.weight" for t in summary.tensors)
    assert summary.metadata["tokenizer.ggml.scores"].length == 49152


def test_merges_kept_only_over_ascii_space_and_newline() -> None:
    assert convert_merge("Ġ t") == "Ġ t"
    assert convert_merge("Ċ Ċ") == "Ċ Ċ"
    assert convert_merge("Ã ©") is None  # a piece of a UTF-8 character: never applies
    assert convert_merge("broken") is None


def test_what_it_cannot_convert_is_a_clean_error(tmp_path: Path) -> None:
    bloom = write_bloom(tmp_path / "bloom.gguf")
    done = run_convert(bloom, tmp_path / "out.gguf")
    assert done.returncode == 2
    assert "only llama-architecture GGUFs" in done.stderr and "Traceback" not in done.stderr
    missing = run_convert(tmp_path / "nope.gguf", tmp_path / "out.gguf")
    assert missing.returncode == 2 and "no such file" in missing.stderr

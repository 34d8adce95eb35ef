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


AB_CONFIG = Path(__file__).resolve().parents[3] / "config" / "ab-llama-cpp-vs-ctransformers.toml"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """Where the A/B config expects it: models/ beside its config/ folder."""
    target = tmp_path_factory.mktemp("ab") / "models" / "smollm2-135m-instruct-ctransformers.gguf"
    done = run_convert(smollm2_path, target)
    assert done.returncode == 0, done.stderr
    assert "merges kept" in done.stdout
    return target


@pytest.fixture(scope="module")
def gateway(converted: Path) -> Iterator[GatewayProcess]:
    """The project's A/B config itself, the same SmolLM2 weights on both engines."""
    folder = converted.parent.parent
    (folder / "config").mkdir()
    config = folder / "config" / AB_CONFIG.name
    config.write_text(AB_CONFIG.read_text())
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def complete(gw: GatewayProcess, variant: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/v1/completions",
        json={"model": "smol-engines", **body},
        headers={"x-gateway-variant": variant},
        timeout=120,
    )


@pytest.mark.parametrize("variant", ["ctransformers", "llama_cpp"])
def test_both_engines_of_the_ab_config_know_the_capital_of_france(
    gateway: GatewayProcess, variant: str
) -> None:
    r = complete(gateway, variant, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-variant"] == variant
    assert "Paris" in r.json()["choices"][0]["text"]


def test_the_ctransformers_variant_runs_in_a_worker(gateway: GatewayProcess) -> None:
    data = httpx.get(f"{gateway.base_url}/v1/backends", timeout=30).json()["data"]
    by_model = {m["model"]: m for m in data}
    assert by_model["smol-ctransformers"]["isolation"] == "process"
    assert by_model["smol-llama-cpp"]["isolation"] == "none"


def test_the_converted_file_tokenizes_words_with_their_spaces(gateway: GatewayProcess) -> None:
    # merges over "Ġ" kept: " capital" is one token, as in llama.cpp, not " " + "capital"
    text = "The capital of France is"
    pieces = {}
    for model in ("smol-ctransformers", "smol-llama-cpp"):
        r = httpx.post(
            f"{gateway.base_url}/tokenize",
            json={"model": model, "content": text, "with_pieces": True},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        pieces[model] = [(t["id"], t["piece"]) for t in r.json()["tokens"]]
    assert [p for _, p in pieces["smol-ctransformers"]] == [
        "The",
        " capital",
        " of",
        " France",
        " is",
    ]
    assert pieces["smol-ctransformers"] == pieces["smol-llama-cpp"]


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
